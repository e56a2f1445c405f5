"""PLY point-cloud / mesh files: binary little-endian writer; binary (both byte orders) and ASCII reader.

Our own implementation on numpy structured arrays (the common Python PLY packages are GPL).

Vertex properties written by :func:`write_ply`:

* ``x, y, z`` (float32, or float64 when ``xyz`` is float64),
* ``nx, ny, nz`` (float32) when normals are given,
* ``red, green, blue`` (uchar) when colours are given,
* any extra per-vertex scalar properties (e.g. the 3D-Gaussian-splatting fields ``f_dc_0``,
  ``opacity``, ``scale_0`` ...), float32 by default,
* an optional ``face`` element with ``list uchar int vertex_indices``.

:func:`read_ply` returns a ``dict`` of numpy arrays: ``"xyz"`` (N,3), ``"normals"`` (N,3) and
``"rgb"`` (N,3) when present (colours as stored, normally uint8 0-255), ``"alpha"`` when present,
every other vertex property under its own name (N,), and ``"faces"`` (M,k) int64 when the file has
a face element with a constant number of indices per face (a list of arrays otherwise).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_open
from .errors import InputFileError, reading
from .files import check_input_file

__all__ = ["PlyFormatError", "read_ply", "write_ply"]

logger = logging.getLogger(__name__)

_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NP_TO_PLY: dict[str, str] = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int",
                              "u4": "uint", "f4": "float", "f8": "double"}
_RESERVED = {"x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "alpha"}


class PlyFormatError(InputFileError):
    """A PLY file is malformed, truncated or uses an unsupported feature (the message names the file).

    Raised as ``PlyFormatError(message)`` where the message already names the file (or with the
    :class:`~worldstereo.io.errors.InputFileError` signature ``(path, reason, field=...)``).
    """

    def __init__(self, path_or_message: Any, reason: str | None = None, *, field: str | None = None,
                 option: str | None = None) -> None:
        if reason is None:
            super().__init__(None, str(path_or_message), field=field, option=option)
        else:
            super().__init__(path_or_message, reason, field=field, option=option)


@dataclass
class _Property:
    name: str
    dtype: str                     # numpy type code without byte order, e.g. "f4"
    count_dtype: str | None = None  # set for list properties


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property] = field(default_factory=list)

    @property
    def has_list(self) -> bool:
        return any(p.count_dtype is not None for p in self.properties)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{name}: expected an array-like, got {type(x).__name__}") from exc


def _check_n3(arr: np.ndarray, name: str, n: int | None) -> None:
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3), got {tuple(arr.shape)}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows (one per point), got {arr.shape[0]}")


def _colors_to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.bool_:
        raise TypeError("rgb: boolean colours are not colours; expected uint8 0-255 or float in [0, 1]")
    if np.issubdtype(rgb.dtype, np.integer):
        if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
            raise ValueError(f"rgb: integer colours must lie in [0, 255], got range [{rgb.min()}, {rgb.max()}] "
                             "(they are never wrapped or clipped)")
        return rgb.astype(np.uint8)
    if not np.issubdtype(rgb.dtype, np.floating):
        raise TypeError(f"rgb: expected uint8 or float colours, got dtype {rgb.dtype}")
    if rgb.size and not np.isfinite(rgb).all():
        raise ValueError("rgb: colours contain NaN or infinity")
    if rgb.size and (rgb.min() < -1e-3 or rgb.max() > 1.0 + 1e-3):
        raise ValueError(f"rgb: float colours must lie in [0, 1], got range [{rgb.min():.4g}, {rgb.max():.4g}] "
                         "(for 0-255 values pass a uint8 array)")
    return np.round(np.clip(rgb.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_comment(text: Any, i: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"comments[{i}]: expected a string, got {type(text).__name__}")
    if any(not (32 <= ord(ch) < 127) for ch in text):
        raise ValueError(f"comments[{i}]: {text[:60]!r} contains a line break, a control or a non-ASCII character; "
                         "PLY header comments are single lines of printable ASCII")
    return text


def _check_property_name(key: Any) -> str:
    if not isinstance(key, str) or not key or any(not (33 <= ord(ch) < 127) for ch in key):
        raise ValueError(f"extra: property names must be non-empty printable ASCII without spaces, got {key!r}")
    return key


def write_ply(
    path: str | os.PathLike[str],
    xyz: Any,
    rgb: Any | None = None,
    normals: Any | None = None,
    extra: Mapping[str, Any] | None = None,
    faces: Any | None = None,
    *,
    comments: list[str] | None = None,
) -> None:
    """Write a binary little-endian PLY file atomically (temporary file + ``os.replace``).

    Args:
        path: destination file.
        xyz: (N,3) positions (numpy array or tensor); float64 input is stored as ``double``,
            everything else as ``float``.
        rgb: optional (N,3) colours: uint8 (or other integers in 0-255) stored as is, floats in
            [0,1] scaled by 255 and rounded; other values are refused (never wrapped or clipped).
        normals: optional (N,3) normals, stored as float32 ``nx, ny, nz``.
        extra: optional extra vertex properties ``name -> (N,)`` array (or (N,k), stored as
            ``name_0 .. name_{k-1}``). Floats are stored as float32 (float64 kept), integers keep
            their type (int64 is refused: PLY has no 64-bit integers).
        faces: optional (M,k) integer vertex indices (triangles: k=3) written as a ``face`` element.
        comments: optional header comment lines (printable ASCII, no line breaks: a newline
            could otherwise inject header lines).

    Raises:
        ValueError / TypeError: shapes, dtypes or names are invalid (raised before the file is touched).
    """
    if comments is not None and not isinstance(comments, (list, tuple)):
        raise TypeError(f"comments: expected a list of strings, got {type(comments).__name__}")
    comment_lines = [_check_comment(c, i) for i, c in enumerate(comments or [])]
    xyz_a = _as_array(xyz, "xyz")
    _check_n3(xyz_a, "xyz", None)
    n = int(xyz_a.shape[0])
    if not np.issubdtype(xyz_a.dtype, np.number):
        raise TypeError(f"xyz: expected a numeric array, got dtype {xyz_a.dtype}")
    columns: list[tuple[str, np.ndarray]] = []
    pos_dtype = np.float64 if xyz_a.dtype == np.float64 else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        pos = xyz_a.astype(pos_dtype)
    if pos.size and not np.isfinite(pos).all():
        raise ValueError(f"xyz: coordinates contain NaN or infinite values (or exceed the {np.dtype(pos_dtype).name} "
                         f"range); refusing to write them")
    for i, c in enumerate("xyz"):
        columns.append((c, pos[:, i]))
    if normals is not None:
        nrm = _as_array(normals, "normals")
        _check_n3(nrm, "normals", n)
        if not np.issubdtype(nrm.dtype, np.number) or (nrm.size and not np.isfinite(nrm.astype(np.float64)).all()):
            raise ValueError("normals: expected finite numbers")
        for i, c in enumerate(("nx", "ny", "nz")):
            columns.append((c, nrm[:, i].astype(np.float32)))
    if rgb is not None:
        col = _as_array(rgb, "rgb")
        _check_n3(col, "rgb", n)
        col8 = _colors_to_uint8(col)
        for i, c in enumerate(("red", "green", "blue")):
            columns.append((c, col8[:, i]))
    if extra:
        names = {c for c, _ in columns}
        for key, value in extra.items():
            _check_property_name(key)
            arr = _as_array(value, f"extra[{key!r}]")
            if arr.ndim == 0 or arr.shape[0] != n or arr.ndim > 2:
                raise ValueError(f"extra[{key!r}]: expected shape ({n},) or ({n}, k), got {tuple(arr.shape)}")
            if arr.dtype == np.bool_:
                arr = arr.astype(np.uint8)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
            elif arr.dtype.str[1:] not in _NP_TO_PLY:
                raise TypeError(f"extra[{key!r}]: dtype {arr.dtype} has no PLY equivalent")
            sub = [(key, arr)] if arr.ndim == 1 else [(f"{key}_{j}", arr[:, j]) for j in range(arr.shape[1])]
            for name, a in sub:
                if name in names:
                    raise ValueError(f"extra: property {name!r} clashes with another property")
                names.add(name)
                columns.append((name, a))
    face_arr = None
    if faces is not None:
        face_arr = _as_array(faces, "faces")
        if face_arr.ndim != 2 or face_arr.shape[1] < 3 or face_arr.shape[1] > 255:
            raise ValueError(f"faces: expected shape (M, k) with 3 <= k <= 255, got {tuple(face_arr.shape)}")
        if not np.issubdtype(face_arr.dtype, np.integer):
            raise TypeError(f"faces: expected integer indices, got dtype {face_arr.dtype}")
        if face_arr.size and (face_arr.min() < 0 or face_arr.max() >= n):
            raise ValueError(f"faces: indices must lie in [0, {n - 1}]")

    vdtype = np.dtype([(name, "<" + a.dtype.str[1:]) for name, a in columns])
    vertex = np.empty(n, dtype=vdtype)
    for name, a in columns:
        vertex[name] = a
    header = ["ply", "format binary_little_endian 1.0", "comment written by worldstereo"]
    header += [f"comment {c}" for c in comment_lines]
    header.append(f"element vertex {n}")
    header += [f"property {_NP_TO_PLY[a.dtype.str[1:]]} {name}" for name, a in columns]
    face_bytes = b""
    if face_arr is not None:
        k = face_arr.shape[1]
        header.append(f"element face {face_arr.shape[0]}")
        header.append("property list uchar int vertex_indices")
        fdtype = np.dtype([("n", "u1"), ("idx", "<i4", (k,))])
        frec = np.empty(face_arr.shape[0], dtype=fdtype)
        frec["n"] = k
        frec["idx"] = face_arr.astype(np.int32)
        face_bytes = frec.tobytes()
    header.append("end_header")
    with atomic_open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertex.tobytes())
        fh.write(face_bytes)
    logger.debug("wrote %d vertices to %s", n, path)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _parse_header(raw: bytes, path: Path) -> tuple[str, list[_Element], int]:
    def err(msg: str) -> PlyFormatError:
        return PlyFormatError(path, f"{msg}")

    if not raw.startswith(b"ply"):
        raise err("not a PLY file (missing 'ply' magic)")
    end = raw.find(b"end_header")
    if end < 0:
        raise err("header has no 'end_header' line (truncated or not a PLY file)")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise err("header has no newline after 'end_header'")
    try:
        text = raw[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise err("header is not ASCII text") from exc
    fmt = None
    elements: list[_Element] = []
    for lineno, line in enumerate(text.replace("\r", "").split("\n")[1:], start=2):
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        kw = parts[0]
        if kw == "format":
            if len(parts) != 3 or parts[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise err(f"line {lineno}: unsupported format line {line!r}")
            fmt = parts[1]
        elif kw == "element":
            if len(parts) != 3:
                raise err(f"line {lineno}: malformed element line {line!r}")
            try:
                count = int(parts[2])
            except ValueError:
                raise err(f"line {lineno}: element count {parts[2]!r} is not an integer") from None
            if count < 0:
                raise err(f"line {lineno}: negative element count")
            if any(e.name == parts[1] for e in elements):
                raise err(f"line {lineno}: element {parts[1]!r} declared twice")
            elements.append(_Element(parts[1], count))
        elif kw == "property":
            if not elements:
                raise err(f"line {lineno}: property before any element")
            if len(parts) == 5 and parts[1] == "list":
                if parts[2] not in _PLY_TYPES or parts[3] not in _PLY_TYPES:
                    raise err(f"line {lineno}: unknown list types in {line!r}")
                if _PLY_TYPES[parts[2]][0] not in "iu":
                    raise err(f"line {lineno}: list count type {parts[2]!r} is not an integer type")
                prop = _Property(parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]])
            elif len(parts) == 3:
                if parts[1] not in _PLY_TYPES:
                    raise err(f"line {lineno}: unknown property type {parts[1]!r}")
                prop = _Property(parts[2], _PLY_TYPES[parts[1]])
            else:
                raise err(f"line {lineno}: malformed property line {line!r}")
            if any(q.name == prop.name for q in elements[-1].properties):
                raise err(f"line {lineno}: property {prop.name!r} declared twice in element {elements[-1].name!r}")
            elements[-1].properties.append(prop)
        else:
            raise err(f"line {lineno}: unknown header keyword {kw!r}")
    if fmt is None:
        raise err("header has no 'format' line")
    for e in elements:
        if e.count and not e.properties:
            raise err(f"element {e.name!r} declares {e.count} records but no properties")
    return fmt, elements, nl + 1


def _read_binary(data: memoryview, offset: int, el: _Element, bo: str, path: Path) -> tuple[Any, int]:
    """Return (records, new offset). Scalar-only elements -> structured array; list elements -> dict."""
    def truncated() -> PlyFormatError:
        return PlyFormatError(path, f"file truncated while reading element {el.name!r}")

    if not el.has_list:
        dt = np.dtype([(p.name, bo + p.dtype) for p in el.properties])
        nbytes = dt.itemsize * el.count
        if offset + nbytes > len(data):
            raise truncated()
        return np.frombuffer(data, dtype=dt, count=el.count, offset=offset), offset + nbytes
    # list element: try the fast path (every list has the length of the first record)
    if el.count == 0:
        return {p.name: [] for p in el.properties}, offset
    first_dt = []
    pos = offset
    for p in el.properties:
        if p.count_dtype is None:
            first_dt.append((p.name, bo + p.dtype, ()))
            pos += np.dtype(p.dtype).itemsize
        else:
            cdt = np.dtype(bo + p.count_dtype)
            if pos + cdt.itemsize > len(data):
                raise truncated()
            k = int(np.frombuffer(data, dtype=cdt, count=1, offset=pos)[0])
            if k < 0:
                raise PlyFormatError(path, f"element {el.name!r}: negative list length {k}")
            first_dt.append((p.name + "__count", bo + p.count_dtype, ()))
            first_dt.append((p.name, bo + p.dtype, (k,)))
            pos += cdt.itemsize + k * np.dtype(p.dtype).itemsize
    dt = np.dtype([(n, t, s) if s else (n, t) for n, t, s in first_dt])
    nbytes = dt.itemsize * el.count
    if offset + nbytes <= len(data):
        rec = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
        if all((rec[p.name + "__count"] == rec[p.name].shape[1]).all()
               for p in el.properties if p.count_dtype is not None):
            out = {p.name: np.array(rec[p.name]) for p in el.properties}
            return out, offset + nbytes
    # slow path: variable-length lists
    cols: dict[str, list[Any]] = {p.name: [] for p in el.properties}
    pos = offset
    for _ in range(el.count):
        for p in el.properties:
            if p.count_dtype is None:
                dt1 = np.dtype(bo + p.dtype)
                if pos + dt1.itemsize > len(data):
                    raise truncated()
                cols[p.name].append(np.frombuffer(data, dtype=dt1, count=1, offset=pos)[0])
                pos += dt1.itemsize
            else:
                cdt = np.dtype(bo + p.count_dtype)
                if pos + cdt.itemsize > len(data):
                    raise truncated()
                k = int(np.frombuffer(data, dtype=cdt, count=1, offset=pos)[0])
                if k < 0:
                    raise PlyFormatError(path, f"element {el.name!r}: negative list length {k}")
                pos += cdt.itemsize
                vdt = np.dtype(bo + p.dtype)
                if pos + k * vdt.itemsize > len(data):
                    raise truncated()
                cols[p.name].append(np.frombuffer(data, dtype=vdt, count=k, offset=pos).copy())
                pos += k * vdt.itemsize
    return cols, pos


def _read_ascii(tokens: list[bytes], pos: int, el: _Element, path: Path) -> tuple[Any, int]:
    def bad(msg: str) -> PlyFormatError:
        return PlyFormatError(path, f"element {el.name!r}: {msg}")

    if not el.has_list:
        nprop = len(el.properties)
        need = nprop * el.count
        if pos + need > len(tokens):
            raise bad("file truncated (not enough values)")
        block = tokens[pos:pos + need]
        dt = np.dtype([(p.name, p.dtype) for p in el.properties])
        rec = np.empty(el.count, dtype=dt)
        try:
            table = np.array(block, dtype=np.float64).reshape(el.count, nprop) if need else \
                np.zeros((el.count, nprop))
        except ValueError as exc:
            raise bad(f"non-numeric value ({exc})") from None
        for j, p in enumerate(el.properties):
            rec[p.name] = _ascii_values(table[:, j], p, bad)
        return rec, pos + need
    cols: dict[str, list[Any]] = {p.name: [] for p in el.properties}
    try:
        for _ in range(el.count):
            for p in el.properties:
                if p.count_dtype is None:
                    cols[p.name].append(_ascii_values(np.array([float(tokens[pos])]), p, bad)[0])
                    pos += 1
                else:
                    k = int(tokens[pos])
                    if k < 0:
                        raise bad(f"negative list length {k}")
                    vals = tokens[pos + 1:pos + 1 + k]
                    if len(vals) != k:
                        raise bad("file truncated inside a list")
                    cols[p.name].append(_ascii_values(np.array([float(v) for v in vals]), p, bad))
                    pos += 1 + k
    except IndexError:
        raise bad("file truncated (not enough values)") from None
    except ValueError as exc:
        raise bad(f"non-numeric value ({exc})") from None
    return cols, pos


def _ascii_values(values: np.ndarray, prop: _Property, bad: Any) -> np.ndarray:
    """ASCII values (float64) -> the property's type, refusing values the type cannot hold
    (fractional or out-of-range integers, e.g. a colour of 300 in a ``uchar``: never wrapped)."""
    dt = np.dtype(prop.dtype)
    if dt.kind in "iu":
        if values.size and not np.isfinite(values).all():
            raise bad(f"property {prop.name!r}: NaN or infinite value for an integer type")
        if values.size and not (values == np.round(values)).all():
            raise bad(f"property {prop.name!r}: fractional value for the integer type {dt}")
        info = np.iinfo(dt)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise bad(f"property {prop.name!r}: values in [{values.min():.0f}, {values.max():.0f}] do not fit the "
                      f"type {dt} ([{info.min}, {info.max}])")
        return values.astype(dt)
    finite = np.isfinite(values)
    if values.size and (np.abs(values[finite]) > np.finfo(dt).max).any():
        raise bad(f"property {prop.name!r}: a value beyond the range of {dt} (max {np.finfo(dt).max:.4g})")
    return values.astype(dt)


def _stack_lists(col: list[Any]) -> np.ndarray | list[np.ndarray]:
    if isinstance(col, np.ndarray):
        return col.astype(np.int64)
    if not col:
        return np.zeros((0, 3), dtype=np.int64)
    lens = {len(c) for c in col}
    if len(lens) == 1:
        return np.stack([np.asarray(c) for c in col]).astype(np.int64)
    return [np.asarray(c, dtype=np.int64) for c in col]


def read_ply(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a PLY file (``binary_little_endian``, ``binary_big_endian`` or ``ascii``).

    Returns:
        dict with ``"xyz"`` (N,3) in the stored float type, ``"normals"`` (N,3) and ``"rgb"`` (N,3)
        when the vertex element has ``nx/ny/nz`` resp. ``red/green/blue`` (colours as stored,
        normally uint8 0-255), ``"alpha"`` (N,) when present, every other vertex property under its
        own name as an (N,) array, and ``"faces"``: (M,k) int64 (or a list of index arrays for
        mixed polygon sizes) when a ``face`` element with ``vertex_indices``/``vertex_index`` exists.
        Other elements are skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PlyFormatError: (an :class:`~worldstereo.io.errors.InputFileError`, a ``ValueError``) the file
            is malformed or truncated, declares more data than it holds, or an ASCII value does not fit
            its property type; the message names the file.
    """
    p = check_input_file(path, "path", "PLY file")
    with reading(p, "PLY file"):
        return _read_ply(p)


def _read_ply(p: Path) -> dict[str, Any]:
    raw = p.read_bytes()
    fmt, elements, body = _parse_header(raw, p)
    vertex_el = next((e for e in elements if e.name == "vertex"), None)
    if vertex_el is None:
        raise PlyFormatError(p, "no 'vertex' element")
    names = [q.name for q in vertex_el.properties]
    if not {"x", "y", "z"} <= set(names):
        raise PlyFormatError(p, f"vertex element lacks x/y/z properties (has {names})")
    if vertex_el.has_list:
        raise PlyFormatError(p, "list properties in the vertex element are not supported")
    records: dict[str, Any] = {}
    if fmt == "ascii":
        tokens = raw[body:].split()
        pos = 0
        for el in elements:
            records[el.name], pos = _read_ascii(tokens, pos, el, p)
    else:
        bo = "<" if fmt == "binary_little_endian" else ">"
        data = memoryview(raw)
        offset = body
        for el in elements:
            records[el.name], offset = _read_binary(data, offset, el, bo, p)
        if offset < len(raw):
            logger.debug("%s: %d trailing bytes ignored", p, len(raw) - offset)
    v = records["vertex"]
    out: dict[str, Any] = {}

    def col(name: str) -> np.ndarray:
        return np.asarray(v[name]).astype(v.dtype[name].newbyteorder("="))

    out["xyz"] = np.stack([col("x"), col("y"), col("z")], axis=1)
    if {"nx", "ny", "nz"} <= set(names):
        out["normals"] = np.stack([col("nx"), col("ny"), col("nz")], axis=1)
    if {"red", "green", "blue"} <= set(names):
        out["rgb"] = np.stack([col("red"), col("green"), col("blue")], axis=1)
    if "alpha" in names:
        out["alpha"] = col("alpha")
    for name in names:
        if name not in _RESERVED:
            out[name] = col(name)
    face = records.get("face")
    if isinstance(face, dict):
        key = "vertex_indices" if "vertex_indices" in face else "vertex_index" if "vertex_index" in face else None
        if key is not None:
            out["faces"] = _stack_lists(face[key])
    return out
