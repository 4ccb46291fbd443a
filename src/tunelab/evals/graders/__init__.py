"""Graders: OpenAI's grader types and tunelab's own, one module for every use.

`parse_grader(spec)` reads a grader's JSON into a typed, validated object (`spec.py`);
`grade(grader, sample, item)` scores one sample (`grade.py`); `run_grader` answers as
OpenAI's `fine_tuning.alpha.graders.run` does (`api.py`). Templates (`templates.py`), the
`calculate_output` formula (`formula.py`), the similarity metrics (`similarity.py`), the
model graders (`model_graders.py`) and the sandboxed python grader (`python_grader.py`,
`sandbox_runner.py`) are the parts. Used by `tunelab eval grade`, the server's graders
routes and as the reward of reinforcement training.
"""

from tunelab.evals.graders.grade import grade
from tunelab.evals.graders.result import GradeResult
from tunelab.evals.graders.spec import Grader, parse_grader, read_grader_file
from tunelab.evals.graders.templates import Sample

__all__ = ["GradeResult", "Grader", "Sample", "grade", "parse_grader", "read_grader_file"]
