"""The lifeline between rsdchat and a server it started: `python -m rsdchat_vllm.guard GRACE ARGV…`.

rsdchat starts the guard as the leader of a new process group, with a pipe as its stdin that it
never writes to, and the guard runs ARGV (the `vllm serve` command line) in that group. When the
pipe reaches end of file, rsdchat is gone — also after `kill -9`, which no handler of rsdchat's
sees — and the guard stops the group: SIGTERM, then SIGKILL to whatever is left after GRACE
seconds. rsdchat's own stop (SIGTERM to the group) is meant for the server: the guard waits for
the server to exit and then exits as it did, so rsdchat reads the server's exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from types import FrameType


def _wait_for_the_server(signum: int, frame: FrameType | None) -> None:
    """SIGTERM to the group: the server stops and the guard exits after it. (A handler, not
    SIG_IGN, which the server would inherit across exec.)"""


def main(argv: list[str]) -> int:
    grace, command = float(argv[0]), argv[1:]
    signal.signal(signal.SIGTERM, _wait_for_the_server)
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # the guard's group, stdout and stderr
    orphaned = threading.Event()

    def lifeline() -> None:
        while os.read(0, 4096):  # b"" at end of file: rsdchat has exited (the raw fd: no buffer lock
            pass  # for a daemon thread to hold while the interpreter shuts down)
        orphaned.set()
        os.killpg(0, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(grace)
        os.killpg(0, signal.SIGKILL)  # what is left of the group, the guard included

    threading.Thread(target=lifeline, daemon=True).start()
    status = server.wait()
    if orphaned.is_set():
        os.killpg(0, signal.SIGKILL)  # the server's own children, should any linger
    if status < 0:  # killed by a signal: die of the same one, for rsdchat to report
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset (EINVAL)
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]) & 0xFF)  # at once: the lifeline thread may still be reading
