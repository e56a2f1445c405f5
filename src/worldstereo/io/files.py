"""Reading input files safely: existence and size checks, UTF-8 text, strict JSON, ``.npy`` / ``.npz``.

Every function raises :class:`FileNotFoundError` when the path does not exist and
:class:`~worldstereo.io.errors.InputFileError` (a ``ValueError``) for anything else that is wrong
with the file: a directory, unreadable, larger than the limits of :mod:`worldstereo.io.limits`,
not UTF-8, not JSON, JSON with ``NaN`` / ``Infinity`` / numbers that overflow, an array header that
declares more data than the file holds, a pickled (object) array, a corrupt zip archive.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import limits
from .errors import InputFileError, reading
from worldstereo.errors import MissingPathError

__all__ = [
    "check_input_file",
    "finite_matrix",
    "finite_number",
    "number_array",
    "read_text_file",
    "read_json_file",
    "parse_json_text",
    "load_npy",
    "load_npz",
]


def check_input_file(path: str | os.PathLike[str], name: str, what: str = "file", *,
                     max_bytes: int | None = None) -> Path:
    """``path`` as a :class:`Path` after checking that it is a readable regular file.

    Args:
        path: the file.
        name: the parameter / option it came from, for messages (``"--cameras"``).
        what: what the file should be (``"camera file"``).
        max_bytes: refuse larger files.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputFileError: a directory or other non-file, unreadable, or too large.
        TypeError: ``path`` is not a str / PathLike.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file path, got {type(path).__name__}")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MissingPathError(f"{name}: {what} {str(p)!r} does not exist") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, EACCES, embedded NUL ...
        raise InputFileError(p, f"cannot access the {what}: {exc}", option=name) from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        raise InputFileError(p, f"is a directory, expected a {what}", option=name)
    if not _stat.S_ISREG(st.st_mode):
        raise InputFileError(p, f"is not a regular file (a device, FIFO or socket), expected a {what}", option=name)
    if not os.access(p, os.R_OK):
        raise InputFileError(p, f"the {what} is not readable (permission denied)", option=name)
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(p, f"the {what} has {st.st_size} bytes, more than the limit of {max_bytes}", option=name)
    return p


def finite_number(value: Any, field: str, *, path: Any = None, integer: bool = False, positive: bool = False,
                  minimum: float | None = None, maximum: float | None = None) -> float | int:
    """Check one number read from a file (not a bool, finite, optional bounds / integrality).

    Integral floats (``640.0``) are accepted where an integer is expected; fractional ones
    (``640.5``) are refused, never truncated.

    Raises:
        InputFileError: naming ``path`` and ``field``.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputFileError(path, f"expected {kind}, got {type(value).__name__} {_short(value)}", field=field)
    try:
        x = float(value)
    except OverflowError:
        raise InputFileError(path, f"number too large: {_short(value)}", field=field) from None
    if not math.isfinite(x):
        raise InputFileError(path, f"expected a finite number, got {value!r}", field=field)
    if integer and x != int(x):
        raise InputFileError(path, f"expected an integer, got the fractional value {value!r}", field=field)
    if positive and not x > 0:
        raise InputFileError(path, f"expected a positive number, got {value!r}", field=field)
    if minimum is not None and x < minimum:
        raise InputFileError(path, f"expected a value >= {minimum}, got {value!r}", field=field)
    if maximum is not None and x > maximum:
        raise InputFileError(path, f"expected a value <= {maximum}, got {value!r}", field=field)
    return int(x) if integer else x


def finite_matrix(value: Any, shape: tuple[int, ...], field: str, *, path: Any = None) -> np.ndarray:
    """A float64 array of exactly ``shape`` with finite entries, from a (JSON) value read from a file.

    Raises:
        InputFileError: naming ``path`` and ``field``.
    """
    m = number_array(value, field, f"a {'x'.join(map(str, shape))} matrix of numbers", path=path)
    if m.shape != tuple(shape):
        raise InputFileError(path, f"expected shape {tuple(shape)}, got {m.shape}", field=field)
    if not np.isfinite(m).all():
        raise InputFileError(path, "matrix holds NaN or infinite values", field=field)
    return m


def number_array(value: Any, field: str, expected: str = "numbers", *, path: Any = None) -> np.ndarray:
    """``value`` (nested lists of JSON numbers, or an array) as a float64 array; strings, booleans,
    nulls and ragged nesting are refused (``"1"`` is never read as 1).

    Raises:
        InputFileError: naming ``path`` and ``field``.
    """
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "iuf":
            raise TypeError(f"elements of type {raw.dtype}")
        return raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputFileError(path, f"expected {expected} (not strings, booleans or nulls)", field=field) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_text_file(path: str | os.PathLike[str], name: str, what: str = "text file", *,
                   max_bytes: int = limits.MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped).

    Raises:
        FileNotFoundError: missing file.
        InputFileError: not a readable file, larger than ``max_bytes``, not UTF-8, or holding NUL bytes.
    """
    p = check_input_file(path, name, what, max_bytes=max_bytes)
    with reading(p, what):
        raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"is not UTF-8 text (invalid byte at offset {exc.start}); expected a {what}",
                             option=name) from None
    if "\x00" in text:
        raise InputFileError(p, f"contains NUL bytes (binary data); expected a {what}", option=name)
    return text


def _refuse_constant(token: str) -> Any:
    raise InputFileError(None, f"non-finite number {token!r} (JSON has no NaN or Infinity)")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise InputFileError(None, f"number {token[:40]!r} overflows a 64-bit float")
    return value


def parse_json_text(text: str, path: Any = None, what: str = "JSON file") -> Any:
    """Strict JSON: no ``NaN`` / ``Infinity`` literals, no float that overflows, bounded nesting.

    Raises:
        InputFileError: naming ``path``, with the line and column of a syntax error.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InputFileError as exc:
        raise InputFileError(path, exc.reason) from None
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                   f"expected a {what}") from None
    except RecursionError:
        raise InputFileError(path, f"JSON nested too deeply to parse; expected a {what}") from None
    except ValueError as exc:  # e.g. an integer literal with more digits than Python converts
        raise InputFileError(path, f"unusable JSON value ({' '.join(str(exc).split())[:120]})") from None


def read_json_file(path: str | os.PathLike[str], name: str, what: str = "JSON file") -> Any:
    """Parse a JSON file with :func:`read_text_file` and :func:`parse_json_text`."""
    p = Path(path) if isinstance(path, (str, os.PathLike)) else path
    text = read_text_file(p, name, what)
    try:
        return parse_json_text(text, p, what)
    except InputFileError as exc:
        raise exc.with_context(p, name) from None


# ------------------------------------------------------------------------------------ arrays
def _check_header(fh: BinaryIO, available: int, path: Path, option: str, max_bytes: int,
                  member: str | None = None) -> None:
    """Read an ``.npy`` header from ``fh`` and check the data it declares (refusing object dtypes)."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed header
        raise InputFileError(path, f"not a valid .npy array ({' '.join(str(exc).split())[:160]})", option=option, field=member) from None
    if dtype.hasobject:
        raise InputFileError(path, "holds Python objects (a pickled array); only numeric arrays are loaded "
                                   "(pickle is never enabled)", option=option, field=member)
    count = 1
    for d in shape:
        if int(d) < 0:
            raise InputFileError(path, f"not a valid .npy array (negative dimension in shape {shape})", option=option,
                                 field=member)
        count *= int(d)
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise InputFileError(path, f"array of shape {shape} ({nbytes} bytes) exceeds the limit of {max_bytes} bytes",
                             option=option, field=member)
    body = available - fh.tell()
    if nbytes > body:
        raise InputFileError(path, f"truncated: the header declares shape {shape} of {dtype} ({nbytes} bytes) but "
                                   f"only {body} bytes follow", option=option, field=member)


def load_npy(path: str | os.PathLike[str], name: str, *, max_bytes: int = limits.MAX_ARRAY_BYTES) -> np.ndarray:
    """Load one numeric array from an ``.npy`` file (pickle disabled, declared size checked first).

    Raises:
        FileNotFoundError: missing file.
        InputFileError: not an ``.npy`` file, object dtype, truncated or too large.
    """
    p = check_input_file(path, name, ".npy array file")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        _check_header(fh, size, p, name, max_bytes)
    with reading(p, ".npy array file", option=name):
        return np.load(p, allow_pickle=False)


def load_npz(path: str | os.PathLike[str], name: str, *, keys: tuple[str, ...] | None = None,
             max_bytes: int = limits.MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Load the numeric arrays of an ``.npz`` archive (all, or those of ``keys`` that exist).

    Each member's header is checked before it is inflated: its declared size must fit the limit
    and the member's uncompressed size (so neither a lying header nor a zip bomb allocates).

    Raises:
        FileNotFoundError: missing file.
        InputFileError: not a zip archive, a member that is not a numeric ``.npy`` array,
            truncated, or too large.
    """
    p = check_input_file(path, name, ".npz archive")
    out: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputFileError(p, f"not a valid .npz (zip) archive: {exc}", option=name) from None
    with zf, reading(p, ".npz archive", option=name):
        members = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                members[info.filename[:-4]] = info
        wanted = list(members) if keys is None else [k for k in keys if k in members]
        total = 0
        for key in wanted:
            info = members[key]
            if info.file_size > max_bytes + (1 << 16):
                raise InputFileError(p, f"member {key!r} inflates to {info.file_size} bytes, more than the limit of "
                                        f"{max_bytes}", option=name)
            total += info.file_size
            if total > 2 * max_bytes:
                raise InputFileError(p, f"the arrays inflate to more than {2 * max_bytes} bytes", option=name)
            with zf.open(info) as fh:
                _check_header(fh, info.file_size, p, name, max_bytes, member=f"array {key!r}")
            with zf.open(info) as fh:
                out[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return out
