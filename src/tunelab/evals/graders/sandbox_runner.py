"""Runs one `python` grader's `grade(sample, item)` in its own process (standard library only).

`tunelab.evals.graders.python_grader` starts this file as a script (`python -I`: no user
site, no PYTHONPATH, no current directory on the path) and sends one JSON request on stdin:
`{"source", "sample", "item", "memory_bytes", "cpu_seconds"}`. Before the grader's code
runs, this process lowers its own limits (address space, CPU seconds, file size, no child
processes) and cuts itself off the network: it enters a new user and network namespace
where the kernel allows it (then only a loopback interface that is down exists), and in
every case replaces the `socket` module's constructors so that opening a socket raises.
It writes one JSON line to stdout: `{"score": float}` or `{"error": kind, "detail": text}`.
"""

import ctypes
import json
import resource
import socket
import sys
import traceback

_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


def main() -> None:
    request = json.loads(sys.stdin.read())
    isolated = _leave_the_network()
    _limit(request["memory_bytes"], request["cpu_seconds"])
    try:
        namespace: dict = {"__name__": "grader"}
        exec(compile(request["source"], "<grader>", "exec"), namespace)
        score = namespace["grade"](request["sample"], request["item"])
        _reply({"score": float(score), "network_namespace": isolated})
    except MemoryError:
        _reply({"error": "memory", "detail": "the grader ran out of memory"})
    except BaseException:  # the user's code may raise anything, SystemExit included
        _reply({"error": "runtime", "detail": traceback.format_exc(limit=-3)[-2000:]})


def _leave_the_network() -> bool:
    """A fresh network namespace where unprivileged ones are allowed; sockets refused always."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        isolated = libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        isolated = False

    def refused(*args, **kwargs):
        raise PermissionError("network access is disabled in python graders")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
        setattr(socket, name, refused)
    sys.modules["_socket"].socket = refused  # type: ignore[attr-defined]
    return isolated


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
