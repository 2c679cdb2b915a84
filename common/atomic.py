"""Atomic file writes: a crash or a full disk leaves the earlier file, never a half-written one.

A file is written under the temporary name ``{name}.tmp-{pid}`` beside it (same filesystem, and a name no
``*.h5`` or ``*.pth`` pattern matches), synced to disk, then renamed over `path` (os.replace is atomic on
POSIX). The pid keeps concurrent writer processes apart. A killed writer leaves only its temporary file,
which `remove_temporaries` deletes.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from common.errors import UserError

TEMPORARY_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; when the block succeeds, sync it and rename it to `path`,
    otherwise delete it. Errors pass through unchanged (`write_atomic` turns them into a UserError)."""
    temporary = f"{os.fspath(path)}{TEMPORARY_MARK}{os.getpid()}"
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Create `path` by calling write(temp_path) inside `atomic_path`; an OSError becomes a one-line UserError."""
    try:
        with atomic_path(path) as temporary:
            write(temporary)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}; free disk space or choose another "
                        f"--output-dir (any earlier {os.path.basename(path)} is intact)") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`write_atomic` for a text file (UTF-8)."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)

    write_atomic(path, write)


def remove_temporaries(directory: str | os.PathLike, pattern: str) -> None:
    """Delete the temporary files that killed writers left for the files matching `pattern` (a glob relative to
    `directory`, e.g. "*.pth"); call it before writing there again."""
    for temporary in Path(directory).glob(f"{pattern}{TEMPORARY_MARK}*"):
        temporary.unlink(missing_ok=True)
