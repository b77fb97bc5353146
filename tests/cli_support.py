"""``actorq`` commands run in the test's own process: `actorq.node.cli.main` with its output captured.

For tests about what a command parses, reads and prints: the same ``main(argv)`` that
``python -m actorq.node.cli`` calls, its return (or `SystemExit`) as the exit code, its
stdout and stderr as text, without an interpreter start per call (0.5 to 1.5 s each on a
busy machine). Tests about the process itself (``actorq run``, signals, what a child sees)
still start one.

Call it from a worker thread (``asyncio.to_thread``) when the test's loop runs a node the
command talks to. One call at a time: stdout and stderr are the process's.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import threading

from actorq.node.cli import main

_one_at_a_time = threading.Lock()


def actorq_main(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``actorq *args`` in this process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with _one_at_a_time, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's refusals and --help, as the process would exit
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
                code = 1
            else:
                code = 0 if exc.code is None else exc.code
    return subprocess.CompletedProcess(["actorq", *args], code, out.getvalue(), err.getvalue())
