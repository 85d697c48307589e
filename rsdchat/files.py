"""How rsdchat writes the files a user owns: whole or not at all, and never over what is not its own.

Every file rsdchat writes goes through this module (the list is in docs/files.md):

- `write_atomic`: a temp file beside the target, fsynced, renamed over it, the folder fsynced.
  A crash, a full disk or a signal leaves the old file or the new one, whole. It never
  replaces what is not a regular file (a symbolic link, a device, a folder), and it replaces
  a file that exists only when the caller says the file is its own (`replace`).
- `JsonLines`: a JSONL file that grows one fsynced line at a time, one writer at a time (a
  lock). Opening it changes nothing: the whole lines are read (a last line cut by a crash,
  even inside a multi-byte character, is left out), the caller's `ours` check runs, and only
  the first write repairs the cut. An append that fails (a full disk) is taken back whole.
- `read_jsonl`: the same reading, for a file that is only read.
- `Lock`: an exclusive lock beside a file that another rsdchat may want to write too (a chat).
- `clean_temps`: the temp files that a killed rsdchat left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsdchat.core.errors import ConfigError, RsdchatError
from rsdchat.strict_json import dumps

Record = dict[str, Any]  # one JSON object: a line of a results file, a transcript, --json output
TEMP_SUFFIX = ".rsdchat-tmp"
_TEMP = re.compile(r"^\..+\.(\d+)\..*(\.rsdchat-tmp|\.tmp)$")  # .NAME.PID.RANDOM.rsdchat-tmp


class Refused(ConfigError):
    """A file rsdchat will not write: not its own, not a regular file, or the input itself (exit 2)."""


class WriteError(RsdchatError):
    """Writing failed (a full disk, a lost mount): the message says what was kept (exit 1)."""


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable(path: Path, *, replace: bool | Callable[[Path], bool] = False, what: str = "") -> None:
    """Refuse (Refused) to write `path` where something is there that may not be replaced.

    Nothing there: fine. A symbolic link, a device, a folder: refused. A regular file: only
    when `replace` is True or returns True for it (the caller recognises the file as its own).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {_why(exc)}") from None
    if stat.S_ISLNK(mode):
        raise Refused(f"{path} is a symbolic link; rsdchat does not write through links: give a file path")
    if not stat.S_ISREG(mode):
        raise Refused(f"{path} is not a regular file; give a file path")
    if not (replace(path) if callable(replace) else replace):
        raise Refused(f"{path} exists{what}; rsdchat does not write over it: give another path")


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file (both exist and share an inode)."""
    try:
        return os.path.samefile(a.expanduser(), b.expanduser())
    except OSError:
        return False


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot: the rename is still atomic
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it (Linux), else set and put back."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> tuple[int, Path]:
    """A new temp file in `path`'s folder, named so that `clean_temps` finds it if we die."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    return fd, Path(name)


def replace_with_temp(path: Path, fill: Callable[[int], None]) -> None:
    """Write a temp file beside `path` with `fill(fd)`, fsync it and rename it over `path`.

    On any failure (or a signal) the temp file is removed and `path` is as it was.
    """
    fd, tmp = temp_beside(path)
    try:
        try:
            fill(fd)
            os.fsync(fd)
            try:  # the mode of the file it replaces, else what a new file gets (mkstemp's is 0600)
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def write_atomic(
    path: Path, data: str | bytes, *, replace: bool | Callable[[Path], bool] = False, what: str = ""
) -> Path:
    """Write `data` to `path` whole or not at all (see the module's docstring); `path` is returned.

    `replace`: whether an existing regular file may be replaced (True, or a check of it);
    `what` ends the refusal's "PATH exists…" (", and is not an rsdchat transcript").
    """
    path = path.expanduser()
    check_writable(path, replace=replace, what=what)
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def fill(fd: int) -> None:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_with_temp(path, fill)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {_why(exc)}; nothing was changed there") from None
    return path


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file's contents, or one line (ConfigError) saying why it cannot be read."""
    path = path.expanduser()
    try:
        return path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {_why(exc)}") from None


Check = Callable[[Record], str | None]  # what is wrong with one line (None: nothing)


def _whole_lines(path: Path, data: bytes, check: Check | None = None) -> tuple[list[Record], int]:
    """The records in `data` and the length of its whole lines (a cut last line is left out).

    A line that is not a JSON object, or that `check` finds wrong, is a ConfigError naming it.
    """
    whole = data.rfind(b"\n") + 1
    records: list[Record] = []
    for number, raw in enumerate(data[:whole].splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}:{number}: not UTF-8 text; was the file edited?") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{path}:{number}: not a JSON line; was the file edited?") from None
        problem = "not a JSON object" if not isinstance(record, dict) else check(record) if check else None
        if problem:
            raise ConfigError(f"{path}:{number}: {problem}")
        records.append(record)
    return records, whole


def read_jsonl(path: Path, check: Check | None = None) -> list[Record]:
    """The records of a JSONL file, read only; a last line cut short by a crash is left out."""
    path = path.expanduser()
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {_why(exc)}") from None
    return _whole_lines(path, data, check)[0]


class JsonLines:
    """A JSONL file that grows one whole, fsynced line at a time; one writer at a time (a lock).

    `ours(records)` returns why the file is not the caller's kind ('' or None: it is); it runs
    before anything is written, so a file that is not ours is refused untouched. `check`
    finds what is wrong with one line (its error names the line).
    """

    def __init__(
        self,
        path: Path,
        ours: Callable[[list[Record]], str | None] | None = None,
        check: Check | None = None,
    ) -> None:
        self.path = path.expanduser()
        self.lines: list[Record] = []
        self._fd: int | None = None
        self._cut: int | None = None  # the length of the whole lines, while a cut tail is still there
        try:
            mode = os.stat(self.path).st_mode  # through a link: appending to its file replaces nothing
            if not stat.S_ISREG(mode):
                raise Refused(f"{self.path} is not a regular file; give a file path")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot open {self.path}: {_why(exc)}") from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"{self.path} is in use by another rsdchat") from None
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot open {self.path}: {_why(exc)}") from None
        try:
            self._read(ours, check)
        except BaseException:
            self.close()
            raise

    def _read(self, ours: Callable[[list[Record]], str | None] | None, check: Check | None) -> None:
        assert self._fd is not None
        with open(self._fd, "rb", closefd=False) as handle:
            data = handle.read()
        self.lines, whole = _whole_lines(self.path, data, check)
        problem = ours(self.lines) if ours is not None else None
        if problem:
            raise Refused(f"{self.path} {problem}; rsdchat writes only to its own files: give another path")
        if whole < len(data):
            self._cut = whole

    def add(self, record: Record) -> None:
        """Append one line, durably (flushed and fsynced before this returns), or nothing at all."""
        if self._fd is None:
            raise ConfigError(f"{self.path} is closed")
        line = (dumps(record) + "\n").encode("utf-8")
        size = self._cut if self._cut is not None else os.fstat(self._fd).st_size
        try:
            if self._cut is not None:  # the last line a crash cut short goes before the first new one
                os.ftruncate(self._fd, self._cut)
                self._cut = None
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # no half line stays behind
                os.ftruncate(self._fd, size)
            raise WriteError(
                f"cannot write {self.path}: {_why(exc)}; every line before is kept:"
                " run the same command again to go on"
            ) from None
        self.lines.append(record)

    def keep_only(self, keep: Callable[[Record], bool]) -> None:
        """Rewrite the file with the lines `keep` accepts (atomically: all of them, or none changed)."""
        assert self._fd is not None
        kept = [line for line in self.lines if keep(line)]
        if len(kept) == len(self.lines) and self._cut is None:
            return
        target = Path(os.path.realpath(self.path))
        text = "".join(dumps(line) + "\n" for line in kept)
        write_atomic(target, text, replace=True)
        os.close(self._fd)  # the lock stays on the old inode: take it on the new file
        self._fd = os.open(target, os.O_RDWR | os.O_APPEND)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lines, self._cut = kept, None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Lock:
    """An exclusive lock on a file, held until `release` or this process's end.

    The lock is taken on `.NAME.lock` beside the file (the file itself is replaced by each
    atomic write, and a lock stays with the inode it was taken on).
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def take(cls, path: Path) -> Lock | None:
        """The lock on `path`, or None when another process holds it."""
        path = path.expanduser()
        lock_path = path.with_name(f".{path.name}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return cls(-1, path)  # a folder we cannot write in: nothing to protect there
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's
    return True


def clean_temps(folder: Path) -> list[Path]:
    """Remove the temp files a killed rsdchat left in `folder` (their process is gone); the removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed
