"""One writer per KB file: an exclusive lock that `kb ingest`, `sync`, `remove` and `reindex` hold.

SQLite already keeps two writers' transactions apart, so two ingests lose nothing; but each would
read, OCR and embed every source, and two creating a new file at once raced to create its tables.
The lock is taken before the file is opened (created, for a new KB) and held until it is closed,
so the second writer waits, says so, and then finds the work done.

It is an open-file-description lock (Linux's F_OFD_SETLK) on one byte of the KB file far past
anything SQLite locks (its lock bytes sit at 1 GiB), so it never meets SQLite's own locks, and
unlike a classic POSIX lock it is not dropped when SQLite closes another descriptor of the file.
Where OFD locks do not exist, flock() on the file does the same job. No lock file is left behind.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from .errors import KBError

LOCK_OFFSET = 1 << 40
"""The byte locked: far past SQLite's lock bytes (0x40000000..0x400001FF) and any real KB's size."""
POLL_S = 0.2


class Busy(KBError):
    """Another kb process is writing the KB file."""


class WriterLock:
    """The exclusive writer lock of one KB file, held from acquire() to release()."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(
        cls, path: str | Path, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> WriterLock:
        """Lock `path` (creating it empty if it does not exist, as SQLite would): at once, or after
        waiting for the writer holding it; with `wait` False, refuse at once."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise KBError(f"Cannot write {path}: {_reason(exc)}.") from exc
        told = False
        try:
            while not _try_lock(fd):
                message = f"another kb process is writing {path}"
                if not wait:
                    raise Busy(
                        f"{message[0].upper()}{message[1:]}; try again when it is done (or leave out --no-wait)."
                    )
                if not told and on_wait is not None:
                    on_wait(f"{message}; waiting for it to finish (Ctrl-C to stop, --no-wait to fail at once)…")
                    told = True
                time.sleep(POLL_S)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Let the next writer in. Call it after the KB's SQLite connection is closed: closing any
        descriptor of a file drops the classic POSIX locks SQLite holds on it in this process."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the description releases its OFD lock (or flock)

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    import fcntl

    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    if ofd is not None:
        # struct flock: l_type, l_whence, (padding), l_start, l_len, l_pid (0 for OFD locks), padding.
        request = struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, LOCK_OFFSET, 1, 0)
        try:
            fcntl.fcntl(fd, ofd, request)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno not in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
                raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True  # a file system with no locks at all: as before, SQLite alone keeps writes apart
        raise


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
