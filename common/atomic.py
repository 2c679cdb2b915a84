"""Atomic file writes: a crash or a full disk leaves the earlier file, never a half-written one."""
from __future__ import annotations

import os
from typing import Callable

from common.errors import UserError


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Create `path` by calling write(temp_path), then renaming; an OSError becomes a one-line UserError."""
    temp = path + ".tmp"
    try:
        write(temp)
        os.replace(temp, path)
    except OSError as error:
        if os.path.exists(temp):
            os.unlink(temp)
        raise UserError(f"cannot write {path}: {error.strerror or error}; free disk space or choose another "
                        f"--output-dir (any earlier {os.path.basename(path)} is intact)") from None
