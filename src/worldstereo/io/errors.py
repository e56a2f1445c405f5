"""The error every file reader of the library raises for unusable input: :class:`InputFileError`.

Every parser (camera files, PLY, images, videos, ``.npy``/``.npz`` arrays, COLMAP / WorldMirror
models) raises :class:`InputFileError` — a :class:`ValueError` — for *any* content it cannot use:
binary garbage, text that is not UTF-8, JSON nested too deep, wrong types, non-finite numbers,
declared sizes beyond the limits of :mod:`worldstereo.io.limits`, truncated files, decoder failures.
The message names the file, the field and what was expected. A path that does not exist raises
:class:`FileNotFoundError` instead (a missing file, not a bad one).

:func:`reading` is the safety net the readers wrap their parsing in: whatever a parser or a
third-party decoder raises underneath (``KeyError``, ``ZeroDivisionError``, ``RecursionError``,
``UnicodeDecodeError``, ``zipfile.BadZipFile``, numpy's ``ValueError`` ...) leaves it as an
:class:`InputFileError` that names the file, with the original exception chained.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zipfile
from collections.abc import Iterator
from typing import Any

__all__ = ["InputFileError", "reading"]


class InputFileError(ValueError):
    """An input file is malformed, truncated, too large, or holds values the library cannot use.

    The message reads ``"<option>: '<path>': <field>: <reason>"`` (absent parts left out), e.g.
    ``--cameras: 'cams.json': frames[2].w: expected an integer, got 'abc'``.

    Attributes:
        path: the file (``str``), or None for in-memory input (e.g. an already parsed dict).
        field: the key / element / property inside the file the problem is in, or None.
        option: the parameter or command-line option the file was given as, or None.
        reason: the problem and what was expected, without the prefixes.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, *, field: str | None = None,
                 option: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.option = option
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.option:
            parts.append(str(self.option))
        if self.path is not None:
            parts.append(repr(self.path))
        if self.field:
            parts.append(str(self.field))
        parts.append(self.reason)
        return ": ".join(parts)

    def with_context(self, path: str | os.PathLike[str] | None = None, option: str | None = None) -> InputFileError:
        """Fill in the file / option when they are not set yet (in place); returns ``self``."""
        if self.path is None and path is not None:
            self.path = os.fspath(path)
        if self.option is None and option is not None:
            self.option = option
        self.args = (self._message(),)
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing, pytest-xdist)
        return (_rebuild, (type(self), self.path, self.reason, self.field, self.option))


def _rebuild(cls: type, path: str | None, reason: str, field: str | None, option: str | None) -> InputFileError:
    return cls(path, reason, field=field, option=option)


#: what :func:`reading` converts; FileNotFoundError is left alone (a missing file, not a bad one)
#: (PIL reports some broken files with SyntaxError, numpy / torch with RuntimeError)
_CONVERTED = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, RecursionError, EOFError,
              struct.error, zipfile.BadZipFile, OSError, MemoryError, RuntimeError, AssertionError, SyntaxError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    if isinstance(exc, MemoryError):
        return "too large to load into memory"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}: {exc.reason})"
    text = " ".join(str(exc).split())  # one line
    if isinstance(exc, KeyError):
        return f"missing key {text}"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def reading(path: str | os.PathLike[str] | None, what: str = "file", *, option: str | None = None) -> Iterator[None]:
    """Context manager: any failure inside becomes an :class:`InputFileError` naming ``path``.

    An :class:`InputFileError` raised inside passes through unchanged (with ``path`` filled in
    when it had none); :class:`FileNotFoundError` passes through too.

    Args:
        path: the file being parsed (None for in-memory data).
        what: what the file should be (``"PLY file"``, ``"camera file"``), used in the message.
        option: the parameter the data came from, added to errors that name none (useful for
            in-memory data, where there is no path to name).

    Example::

        with reading(path, "camera file"):
            doc = json.loads(path.read_text(encoding="utf-8"))
            ...
    """
    try:
        yield
    except InputFileError as exc:
        raise exc.with_context(path, option)
    except FileNotFoundError:
        raise
    except _CONVERTED as exc:
        if type(exc) in (ValueError, TypeError) and str(exc).strip():
            reason = _describe(exc).split(": ", 1)[1]  # the library's own validators name the field
        else:
            reason = f"cannot read as a {what}: {_describe(exc)}"
        raise InputFileError(path, reason, option=option) from exc
