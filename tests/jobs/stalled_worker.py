"""`python stalled_worker.py STEP`: a worker (`tunelab worker` on one job) whose training
stalls after step STEP (its checkpoint saved and handed to the uploader): it prints
`at step STEP` and waits there, heartbeat and uploads going on, until the test kills it with
SIGKILL, as a machine that dies mid-job."""

from __future__ import annotations

import sys
import threading

from tunelab.engine.steps import StepRecord
from tunelab.providers.local import training, worker


def main(step: int) -> None:
    class Recorder(training.ProgressRecorder):
        def __call__(self, record: StepRecord) -> None:
            super().__call__(record)
            if record.step == step:
                print(f"at step {step}", flush=True)
                threading.Event().wait()  # until SIGKILL

    training.ProgressRecorder = Recorder
    worker.run_worker(max_jobs=1)


if __name__ == "__main__":
    main(int(sys.argv[1]))
