"""Free loopback ports that two rsdchat processes never both take.

A port is leased by holding an exclusive `flock` on `<lock dir>/<port>.lock` for as long as
its server runs: another rsdchat skips a locked port, and the kernel drops the lock when
the holder dies, so a crash leaves nothing stale. A port some other program listens on
is skipped too (it cannot be bound). What no lock can stop (another program binding the
port between the check and the server's own bind) the launcher handles by starting the
server again on another port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from rsdchat.plugin_api import BackendError, ConfigError
from rsdchat_vllm.config import HOST

ATTEMPTS = 50  # ports tried before giving up


class PortLease:
    """A port this process may start a server on, until `release()`."""

    def __init__(self, port: int, path: Path, fd: int) -> None:
        self.port, self.path, self._fd = port, path, fd

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: a waiting rsdchat re-checks the inode
        os.close(self._fd)
        self._fd = -1

    def __repr__(self) -> str:
        return f"PortLease({self.port})"


def lease_port(lock_dir: Path, wanted: int = 0, *, what: str = "server") -> PortLease:
    """A leased port: `wanted`, or any free one when it is 0.

    A wanted port that is taken is a ConfigError naming it; no free port after
    ATTEMPTS tries is a BackendError.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(1 if wanted else ATTEMPTS):
        port = wanted or _kernel_port()
        lease = _lock(lock_dir, port)
        if lease is not None and bindable(port):
            return lease
        if lease is not None:
            lease.release()
        if wanted:
            owner = "another rsdchat" if lease is None else "another program"
            raise ConfigError(
                f"the {what}'s port {wanted} is in use by {owner}; pick another (0: any free one)"
            )
    raise BackendError(f"no free loopback port for the {what} after {ATTEMPTS} tries")


def bindable(port: int) -> bool:
    """Nothing listens on `port` (bound the way servers bind: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _lock(lock_dir: Path, port: int) -> PortLease | None:
    path = lock_dir / f"{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # released and unlinked meanwhile
            raise BlockingIOError
    except OSError:  # locked by another process, or the file went away
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # for people looking: who holds it
    return PortLease(port, path, fd)
