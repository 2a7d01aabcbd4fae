"""The one durable-write routine: temp file in the same directory (O_EXCL) → write → fsync →
rename → fsync the directory. On any error the temp file is removed, so a reader sees the
old file or the new one, never half of either.
"""

from __future__ import annotations

import os


def write_atomically(
    path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Replace path with data durably and atomically; with `owner` (uid, gid), theirs
    before anyone sees it under its name."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except PermissionError:
        # A directory we may write but not read (maildrop/, mode 1730, to postdrop's group)
        # cannot be opened to sync; Postfix's postdrop does not sync it either.
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
