"""Writing files safely, for every room: a lock between processes, a checksum, a write that is never seen half-done,
and CSV cells that a spreadsheet shows as text and never runs; and a command as a person can paste it."""

import contextlib
import fcntl
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def only_writer(path: Path):
    """Hold `path`'s lock (the hidden file `.NAME.lock` beside it) for as long as the block runs, or raise BlockingIOError
    at once when another process holds it. The lock file is removed when the block ends, while still held: a process
    that opened it just before then finds it gone once it gets the lock, and counts it as held (never two writers).
    filelock would leave the empty file behind."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:  # removed (or replaced) by the writer before us
                raise BlockingIOError(f"{lock} was just released by another writer")
        except FileNotFoundError:
            raise BlockingIOError(f"{lock} was just released by another writer") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def file_lock(path: Path):
    """A lock between processes on `path` (a file or a job): the hidden file `.NAME.lock` beside it, its folder created."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name(f".{path.name}.lock"))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP's CSV injection)


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell a spreadsheet shows as text, never runs: a leading `'` before `= + - @`, tab or CR (as OWASP
    recommends), and before a `'` that already stands there, so that `spreadsheet_text` gives back exactly what was
    written. Numbers and everything else pass unchanged. Every CSV the project writes goes through this."""
    if isinstance(cell, str) and cell.lstrip("'").startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def spreadsheet_text(cell: Any) -> Any:
    """What `spreadsheet_safe` was given: reading back a CSV the project wrote (resume, baseline, import)."""
    if isinstance(cell, str) and cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def write_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name beside it, then rename: readers see the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def interpreter() -> str:
    """The Python running this command as a person can paste it: relative to the working folder when inside it
    (`.venv/bin/python`), else its full path; a hint that says plain `python` fails in a shell without the venv."""
    try:
        return str(Path(sys.executable).relative_to(Path.cwd()))
    except ValueError:
        return sys.executable


def pasteable(message: str) -> str:
    """`message` with each `python -m ...` it suggests run by this interpreter."""
    return re.sub(r"(?<![\w/.-])python -m ", f"{interpreter()} -m ", message)
