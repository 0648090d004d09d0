"""Writing a file whole, atomically and never through a link — for every file fmcore or the harness writes.

The content goes to a new temporary file that only this call can have made (``tempfile.mkstemp``: ``O_CREAT |
O_EXCL`` in the destination's directory), and that file is renamed over the destination. A rename replaces a link at
the destination rather than writing through it, but a link there is something the writer did not make, so it is
refused before anything is written (:class:`UnsafePathError`): anyone who can write the directory (a shared temporary
directory) cannot make the write clobber another file. Readers never see half a file, and a process killed mid-write
leaves the old file (and perhaps a ``.<name>.tmp-*`` file, which is never read).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


class UnsafePathError(OSError):
    """A path to be written is not what the writer made (a link planted in its place), or must not hold a run."""


def refuse_link(path: Path) -> None:
    """Raise :class:`UnsafePathError` if ``path`` is a symbolic link (a file written here never is one)."""
    if os.path.islink(path):
        raise UnsafePathError(f"{path} is a symbolic link, which this run did not make; refusing to write through or over "
                              "it (remove it, or use another directory)")


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the block ends without an error (none otherwise)."""
    path = Path(path)
    refuse_link(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)  # mkstemp makes it 0600; the file gets what open() would give it
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        refuse_link(path)  # checked again just before the rename
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, never through a link."""
    with atomic_writer(path) as file:
        file.write(text.encode())
    return Path(path)


