"""Atomic file output: write to a temporary file in the destination folder, rename on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator
from worldstereo.errors import MissingPathError, PathKindError
from worldstereo.io.paths import as_path

__all__ = ["atomic_write", "atomic_open"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Context manager yielding a temporary path next to ``path``; it replaces ``path`` on success.

    The caller writes the complete output to the yielded path (with any library that takes a file
    name). When the ``with`` block finishes without an exception the temporary file is moved onto
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows when both are on the same file
    system, which holds because the temporary file is created in the same folder). On an exception
    the temporary file is removed and ``path`` is left untouched.

    Args:
        path: final destination. Its parent folder must exist.
        suffix: suffix of the temporary file; defaults to the suffix of ``path`` (some writers,
            e.g. video encoders, choose the format from the extension).

    Raises:
        MissingPathError: the parent folder of ``path`` does not exist (a ``FileNotFoundError``).
        PathKindError: ``path`` is an existing directory (an ``IsADirectoryError``).
        (both are also ``ValueError``: see :mod:`worldstereo.errors`)
    """
    final = as_path(path, "path")
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise MissingPathError(f"path: parent folder {str(parent)!r} of {str(final)!r} does not exist")
    if final.is_dir():
        raise PathKindError(f"path: {str(final)!r} is a directory, expected a file path")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix if suffix is None else suffix,
                                    dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600 files; give the result the usual permissions (umask applied)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; it replaces ``path`` when the block succeeds.

    Args:
        path: final destination.
        mode: a writing mode of :func:`open` (``"w"``, ``"wb"``, ``"x"`` forms are refused because
            the final file is replaced anyway).
        **open_kwargs: passed to :func:`open` (e.g. ``encoding="utf-8"``).

    Raises:
        ValueError: ``mode`` is not a plain write mode (``"w"``, ``"wb"``, ``"wt"``).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"mode: expected 'w', 'wt' or 'wb', got {mode!r}")
    with atomic_write(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
