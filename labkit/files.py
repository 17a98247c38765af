"""Files that readers (and other writers) never see half-written."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write `data` (str as UTF-8) to `path` through a temporary file in the same folder, then
    rename it into place: a reader sees the old content or the new, whole, and two writers of
    one path at once each leave a whole file (the last rename wins). The file gets the mode a
    plain write would (0666 less the umask)."""
    target = Path(path)
    body = data.encode() if isinstance(data, str) else data
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
