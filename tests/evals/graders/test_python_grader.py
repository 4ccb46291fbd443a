"""The python grader runs in its own limited process: scores come back, abuse is stopped."""

import time

from tunelab.evals.graders import grade, parse_grader
from tunelab.evals.graders.python_grader import PythonLimits, run_python_grader

LIMITS = PythonLimits(wall_seconds=5, cpu_seconds=2, memory_bytes=512 * 1024**2)


def run(body: str):
    source = "def grade(sample, item):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return run_python_grader(source, {"output_text": "42"}, {"answer": "42"}, LIMITS)


def test_grade_returns_the_score():
    outcome = run("return 1.0 if sample['output_text'] == item['answer'] else 0.25")
    assert (outcome.score, outcome.error) == (1.0, None)


def test_an_endless_loop_is_stopped():
    began = time.monotonic()
    outcome = run("while True:\n    pass")
    assert outcome.error == "timeout"
    assert time.monotonic() - began < LIMITS.wall_seconds + 2


def test_a_sleeping_grader_is_stopped_by_the_wall_clock():
    outcome = run_python_grader(
        "import time\ndef grade(s, i):\n    time.sleep(60)",
        {},
        {},
        PythonLimits(wall_seconds=1, cpu_seconds=5, memory_bytes=512 * 1024**2),
    )
    assert outcome.error == "timeout"


def test_allocating_10_gb_is_stopped():
    outcome = run("data = bytearray(10 * 1024**3)\nreturn len(data)")
    assert outcome.error == "memory"


def test_opening_a_socket_fails():
    for opener in (
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "import _socket\n_socket.socket().connect(('127.0.0.1', 9))",
    ):
        outcome = run(opener + "\nreturn 1.0")
        assert outcome.error == "runtime"
        assert "network access is disabled" in outcome.detail


def test_the_graders_own_errors_are_reported():
    outcome = run("raise ValueError('bad item')")
    assert outcome.error == "runtime" and "bad item" in outcome.detail
    assert run("return 'not a number'").error == "runtime"


def test_grade_flags_a_stopped_python_grader(monkeypatch):
    monkeypatch.setenv("TUNELAB_PYTHON_GRADER_SECONDS", "1")
    spec = {"type": "python", "name": "p", "source": "def grade(s, i):\n    while True: pass"}
    result = grade(parse_grader(spec), "x")
    assert (result.score, result.error) == (0.0, "unresponsive_reward_error")
