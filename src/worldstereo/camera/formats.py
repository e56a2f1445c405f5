"""Pose-file readers and writers for :class:`~worldstereo.camera.CameraTrajectory`.

Formats:
    * reference ``camera.json`` (WorldStereo release): ``extrinsic`` (N, 4, 4) w2c OpenCV,
      ``intrinsic`` (N, 3, 3) pixels, optional ``width``/``height`` and informational keys; and the
      panorama bank layout ``{"0000": {"extrinsic": 4x4, "intrinsic": 3x3}, ...}``.
    * nerfstudio / instant-ngp ``transforms.json``: OpenGL camera-to-world ``transform_matrix`` per
      frame, ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (top level or per frame) or
      ``camera_angle_x``/``camera_angle_y``.
    * RealEstate10K text: first line the video URL, then per frame
      ``timestamp fx fy cx cy k1 k2`` (intrinsics normalised by width/height) and the 3x4 w2c
      (OpenCV) row-major.
    * ``.npz``: ``w2c`` (N, 4, 4), ``intrinsics`` (N, 3, 3), ``image_height``, ``image_width``.
    * our JSON trajectory file (:func:`save_trajectory` / :func:`load_trajectory`), described by
      ``trajectory.schema.json`` next to this module.

All writers are atomic (temporary file in the destination folder + ``os.replace``).

All readers raise :class:`~worldstereo.io.errors.InputFileError` (a ``ValueError``) naming the file
and the field for anything they cannot use — malformed or non-UTF-8 text, JSON with ``NaN`` or
nesting too deep to parse, wrong types, fractional or out-of-range image sizes (at most
:data:`~worldstereo.io.limits.MAX_IMAGE_SIDE`), non-finite numbers, non-rigid poses, a corrupt or
pickled ``.npz`` — and :class:`FileNotFoundError` for a missing file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import limits
from ..io.atomic import atomic_open
from ..io.errors import InputFileError, reading
from ..io.files import finite_number, load_npz, number_array, read_json_file, read_text_file
from ..io.image import open_image_file
from .trajectory import TRAJECTORY_UNITS, CameraTrajectory, _OPENGL_FLIP

__all__ = [
    "read_reference_json",
    "write_reference_json",
    "read_transforms_json",
    "write_transforms_json",
    "read_realestate10k",
    "write_realestate10k",
    "read_npz",
    "write_npz",
    "load_trajectory",
    "save_trajectory",
    "validate_trajectory_document",
    "TRAJECTORY_FORMAT",
    "TRAJECTORY_SCHEMA_PATH",
]

logger = logging.getLogger(__name__)

#: value of the ``format`` key of our trajectory files
TRAJECTORY_FORMAT = "worldstereo.camera_trajectory"
TRAJECTORY_VERSION = 1
#: JSON Schema (draft 2020-12) of our trajectory files
TRAJECTORY_SCHEMA_PATH = Path(__file__).with_name("trajectory.schema.json")

_CONVENTION = {"extrinsics": "world_to_camera", "axes": "opencv", "intrinsics": "pixels"}
_IMAGE_NAMES = ("image.png", "start_frame.png", "image.jpg", "image.jpeg")


# ---------------------------------------------------------------------------------------- helpers
def _read_json(source: Any, name: str = "source") -> tuple[Any, Path | None]:
    if isinstance(source, dict):
        return source, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path or a dict, got {type(source).__name__}")
    path = Path(source)
    return read_json_file(path, name, "camera file"), path


def _size(value: Any, field: str, path: Any) -> int:
    """An image width / height read from a file: a positive integer (integral floats accepted)."""
    return int(finite_number(value, field, path=path, integer=True, minimum=1, maximum=limits.MAX_IMAGE_SIDE))


def _check_size_args(height: Any, width: Any) -> None:
    for key, v in (("height", height), ("width", width)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < v <= limits.MAX_IMAGE_SIDE):
            raise ValueError(f"{key}: expected a positive integer (at most {limits.MAX_IMAGE_SIDE}), got {v!r}")


def _write_text(path: Any, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _image_size(image_path: Any) -> tuple[int, int]:
    with open_image_file(image_path, "image_path") as im:
        w, h = im.size
    return int(h), int(w)


def _matrices(value: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    arr = number_array(value, name, f"a list of {shape[0]}x{shape[1]} matrices of numbers")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != shape:
        raise InputFileError(None, f"expected shape (N, {shape[0]}, {shape[1]}), got {arr.shape}", field=name)
    if arr.shape[0] == 0 or arr.shape[0] > limits.MAX_CAMERAS:
        raise InputFileError(None, f"expected 1 to {limits.MAX_CAMERAS} matrices, got {arr.shape[0]}", field=name)
    if not np.isfinite(arr).all():
        raise InputFileError(None, "matrices must be finite (no NaN / infinity)", field=name)
    return arr


def _require_intrinsics(traj: CameraTrajectory, what: str) -> None:
    if traj.K is None or traj.height is None or traj.width is None:
        raise ValueError(f"traj: {what} needs intrinsics and an image size; call with_intrinsics() first")


def _floats(t: torch.Tensor) -> list:
    return t.detach().cpu().double().tolist()


# ---------------------------------------------------------------------------- reference camera.json
def _discover_image(json_path: Path | None, bank_key: str | None) -> Path | None:
    if json_path is None:
        return None
    folder = json_path.parent
    if bank_key is not None:
        for ext in (".png", ".jpg", ".jpeg"):
            cand = folder / "images" / f"{bank_key}{ext}"
            if cand.is_file():
                return cand
        return None
    for d in (folder, folder.parent, folder.parent.parent):
        for name in _IMAGE_NAMES:
            if (d / name).is_file():
                return d / name
    return None


def read_reference_json(source: Any, *, height: int | None = None, width: int | None = None,
                        image_path: Any = None, dtype: torch.dtype = torch.float32) -> CameraTrajectory:
    """Read a reference-implementation camera file.

    Accepts the per-image / per-trajectory layout (``extrinsic`` (N, 4, 4) w2c OpenCV,
    ``intrinsic`` (N, 3, 3) or (3, 3), optional ``width``/``height``; other keys such as
    ``motion_list`` or ``type`` are informational and ignored) and the panorama bank layout
    (``{"0000": {"extrinsic", "intrinsic"}, ...}``, frames in sorted key order).

    The image size ``K`` refers to is, in order of precedence: the explicit ``height``/``width``;
    the size of ``image_path``; the ``height``/``width`` keys of the file; the size of an image found
    next to the file (``image.png``/``start_frame.png`` in its folder or the two folders above; for a
    bank, ``images/<first key>.png``), which is what the reference itself uses.

    Args:
        source: path of the JSON file, or its already-parsed dict.
        height, width: image size override (both or neither).
        image_path: image whose size is used.
        dtype: float32 (default) or float64 (keeps the file's numbers exactly).

    Raises:
        InputFileError: (a ``ValueError``) unknown layout, bad matrices or sizes, or no way to
            determine the image size; the message names the file and the key.
        ValueError: bad ``height`` / ``width`` arguments.
        FileNotFoundError: ``source`` or ``image_path`` does not exist.
    """
    if (height is None) != (width is None):
        raise ValueError("height/width: give both or neither")
    _check_size_args(height, width)
    data, json_path = _read_json(source)
    with reading(json_path, "reference camera file", option=None if json_path else "source"):
        return _reference_from_doc(data, json_path, height, width, image_path, dtype)


def _reference_from_doc(data: Any, json_path: Path | None, height: int | None, width: int | None, image_path: Any,
                        dtype: torch.dtype) -> CameraTrajectory:
    if not isinstance(data, dict):
        raise ValueError("source: expected a JSON object with 'extrinsic'/'intrinsic' or a bank of such objects")
    bank_key = None
    if "extrinsic" in data:
        ext = _matrices(data["extrinsic"], (4, 4), "extrinsic")
        intr = _matrices(data["intrinsic"], (3, 3), "intrinsic") if data.get("intrinsic") is not None else None
        file_h = None if data.get("height") is None else _size(data["height"], "height", json_path)
        file_w = None if data.get("width") is None else _size(data["width"], "width", json_path)
    elif data and all(isinstance(v, dict) and "extrinsic" in v for v in data.values()):
        keys = sorted(data)
        bank_key = keys[0]
        ext = np.concatenate([_matrices(data[k]["extrinsic"], (4, 4), f"{k}.extrinsic") for k in keys])
        if all(data[k].get("intrinsic") is not None for k in keys):
            intr = np.concatenate([_matrices(data[k]["intrinsic"], (3, 3), f"{k}.intrinsic") for k in keys])
        else:
            intr = None
        file_h, file_w = None, None
    else:
        raise ValueError("source: not a reference camera file (expected an 'extrinsic' key, or a dict of "
                         "views each with 'extrinsic')")
    if height is None:
        if image_path is not None:
            height, width = _image_size(image_path)
        elif file_h is not None and file_w is not None:
            height, width = file_h, file_w
        else:
            found = _discover_image(json_path, bank_key)
            if found is not None:
                height, width = _image_size(found)
            elif intr is not None:
                raise ValueError("height/width: the camera file has no 'width'/'height' keys and no image was found "
                                 "next to it; pass height= and width= (or image_path=) of the image the "
                                 "intrinsics refer to")
    w2c = torch.from_numpy(ext).to(dtype)
    K = None if intr is None else torch.from_numpy(intr).to(dtype)
    if K is None and height is None:
        return CameraTrajectory(w2c)
    return CameraTrajectory(w2c, K, height, width)


def write_reference_json(traj: CameraTrajectory, path: Any = None, *, layout: str = "trajectory",
                         include_size: bool = True, extra: dict | None = None) -> dict:
    """Reference camera-file dict of ``traj``; written atomically to ``path`` when given.

    Args:
        layout: ``"trajectory"`` (``extrinsic``/``intrinsic`` lists + ``width``/``height``) or
            ``"bank"`` (``{"0000": {"extrinsic", "intrinsic"}, ...}``).
        include_size: add ``width``/``height`` (trajectory layout).
        extra: additional informational keys (e.g. ``motion_list``), trajectory layout only.
    """
    _require_intrinsics(traj, "the reference camera.json")
    if layout not in ("trajectory", "bank"):
        raise ValueError(f"layout: expected 'trajectory' or 'bank', got {layout!r}")
    ext, intr = _floats(traj.w2c), _floats(traj.K)  # type: ignore[arg-type]
    if layout == "bank":
        if extra:
            raise ValueError("extra: not supported with layout='bank'")
        out: dict = {f"{i:04d}": {"extrinsic": e, "intrinsic": k} for i, (e, k) in enumerate(zip(ext, intr))}
    else:
        out = dict(extra or {})
        out["extrinsic"] = ext
        out["intrinsic"] = intr
        if include_size:
            out["width"] = traj.width
            out["height"] = traj.height
    if path is not None:
        _write_text(path, json.dumps(out))
    return out


# -------------------------------------------------------------------------------- transforms.json
def _frame_intrinsics(frame: dict, top: dict, i: int, path: Any) -> tuple[float, float, float, float, int, int]:
    def get(key: str) -> Any:
        return frame.get(key, top.get(key))

    def where(key: str) -> str:
        return f"frames[{i}].{key}" if key in frame else key

    w, h = get("w"), get("h")
    if w is None or h is None:
        raise InputFileError(path, "no image size ('w'/'h' at the top level or in the frame)", field=f"frames[{i}]")
    w, h = _size(w, where("w"), path), _size(h, where("h"), path)
    fl_x, fl_y = get("fl_x"), get("fl_y")
    for key, size in (("camera_angle_x", w), ("camera_angle_y", h)):
        if get(key) is not None and (fl_x if key.endswith("x") else fl_y) is None:
            angle = finite_number(get(key), where(key), path=path)
            if not 0 < angle < math.pi:
                raise InputFileError(path, f"expected a field of view in (0, pi) radians, got {angle!r}",
                                     field=where(key))
            focal = 0.5 * size / math.tan(0.5 * angle)
            if key.endswith("x"):
                fl_x = focal
            else:
                fl_y = focal
    if fl_x is None and fl_y is None:
        raise InputFileError(path, "no focal length ('fl_x'/'fl_y' or 'camera_angle_x')", field=f"frames[{i}]")
    fl_x = finite_number(fl_x if fl_x is not None else fl_y, where("fl_x"), path=path, positive=True)
    fl_y = finite_number(fl_y if fl_y is not None else fl_x, where("fl_y"), path=path, positive=True)
    cx = finite_number(get("cx"), where("cx"), path=path) if get("cx") is not None else w / 2.0
    cy = finite_number(get("cy"), where("cy"), path=path) if get("cy") is not None else h / 2.0
    return float(fl_x), float(fl_y), float(cx), float(cy), h, w


def read_transforms_json(source: Any, *, dtype: torch.dtype = torch.float32) -> CameraTrajectory:
    """Read a nerfstudio / instant-ngp ``transforms.json`` (frames in file order).

    ``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z backward); it is
    converted to OpenCV w2c by flipping the camera y and z axes and inverting. Intrinsics keys may
    be global or per frame (per-frame values win); all frames must share one image size.
    Distortion coefficients are ignored (logged).

    Raises:
        InputFileError: (a ``ValueError``) no frames, missing or invalid focal length / size,
            differing sizes, bad matrices; the message names the file and the key.
    """
    data, path = _read_json(source)
    with reading(path, "transforms.json file", option=None if path else "source"):
        return _transforms_from_doc(data, path, dtype)


def _transforms_from_doc(data: Any, path: Path | None, dtype: torch.dtype) -> CameraTrajectory:
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise InputFileError(path, "expected a transforms.json object with a non-empty 'frames' list")
    frames = data["frames"]
    if len(frames) > limits.MAX_CAMERAS:
        raise InputFileError(path, f"{len(frames)} frames, more than the limit of {limits.MAX_CAMERAS}",
                             field="frames")
    mats, Ks, sizes = [], [], set()
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise InputFileError(path, "expected an object with a 'transform_matrix'", field=f"frames[{i}]")
        m = _matrices(fr["transform_matrix"], (4, 4), f"frames[{i}].transform_matrix")[0]
        mats.append(m)
        fx, fy, cx, cy, h, w = _frame_intrinsics(fr, data, i, path)
        sizes.add((h, w))
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if len(sizes) != 1:
        raise InputFileError(path, f"frames have different image sizes {sorted(sizes)}; a trajectory has one size")
    distortion = [data.get(k) for k in ("k1", "k2", "k3", "p1", "p2")]
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0 for v in distortion):
        logger.warning("transforms.json: lens distortion coefficients are ignored (pinhole model)")
    (h, w), = sizes
    c2w_gl = torch.from_numpy(np.stack(mats)).to(torch.float64)
    traj = CameraTrajectory.from_poses(c2w_gl, torch.tensor(Ks, dtype=torch.float64), height=h, width=w,
                                       convention="c2w_opengl")
    return traj.to(dtype=dtype)


def write_transforms_json(traj: CameraTrajectory, path: Any = None, *,
                          file_paths: Sequence[str] | None = None) -> dict:
    """nerfstudio ``transforms.json`` dict of ``traj`` (``camera_model`` OPENCV, OpenGL c2w).

    Shared intrinsics go to the top level, otherwise each frame carries ``fl_x``, ``fl_y``, ``cx``,
    ``cy``. ``file_paths`` defaults to ``images/frame_00000.png``, ... . Written atomically to
    ``path`` when given.
    """
    _require_intrinsics(traj, "transforms.json")
    n = len(traj)
    if file_paths is None:
        file_paths = [f"images/frame_{i:05d}.png" for i in range(n)]
    if len(file_paths) != n:
        raise ValueError(f"file_paths: expected {n} entries (one per frame), got {len(file_paths)}")
    c2w_gl = traj.c2w.double() @ _OPENGL_FLIP.to(traj.device)
    K = traj.K.double()  # type: ignore[union-attr]
    shared = bool((K == K[0]).all())
    out: dict = {"camera_model": "OPENCV", "w": traj.width, "h": traj.height}

    def intr(k: torch.Tensor) -> dict:
        return {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2])}

    if shared:
        out.update(intr(K[0]))
    frames = []
    for i in range(n):
        fr: dict = {"file_path": str(file_paths[i]), "transform_matrix": _floats(c2w_gl[i])}
        if not shared:
            fr.update(intr(K[i]))
        frames.append(fr)
    out["frames"] = frames
    if path is not None:
        _write_text(path, json.dumps(out, indent=2))
    return out


# ------------------------------------------------------------------------------- RealEstate10K
def read_realestate10k(source: Any, *, height: int, width: int, dtype: torch.dtype = torch.float32
                       ) -> CameraTrajectory:
    """Read a RealEstate10K camera file (or its text).

    A first line that is not numeric (the video URL) is skipped. Each pose line has 19 numbers:
    ``timestamp fx fy cx cy k1 k2`` with ``fx, cx`` normalised by the width and ``fy, cy`` by the
    height, then the 3x4 world-to-camera matrix (OpenCV) row-major.

    Args:
        source: path of the text file, or the text itself (a string containing a newline).
        height, width: pixel size of the frames (to de-normalise the intrinsics).

    Raises:
        InputFileError: (a ``ValueError``) malformed lines, non-finite numbers or no pose line; the
            message names the file and the line.
        ValueError: bad ``height`` / ``width``.
    """
    _check_size_args(height, width)
    if height is None or width is None:
        raise ValueError("height/width: required (RealEstate10K intrinsics are normalised by the image size)")
    path = None
    if isinstance(source, str) and "\n" in source:
        text = source
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"source: expected a path or the file's text, got {type(source).__name__}")
        path = Path(source)
        text = read_text_file(path, "source", "RealEstate10K camera file")
    with reading(path, "RealEstate10K camera file", option=None if path else "source"):
        return _realestate_from_text(text, path, height, width, dtype)


def _realestate_from_text(text: str, path: Path | None, height: int, width: int, dtype: torch.dtype
                          ) -> CameraTrajectory:
    rows = []
    for lineno, line in enumerate(text.splitlines()):
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            if lineno == 0 and not rows:
                continue  # URL line
            raise InputFileError(path, f"not numeric: {line[:60]!r}", field=f"line {lineno + 1}") from None
        if len(vals) != 19:
            raise InputFileError(path, f"{len(vals)} numbers, expected 19 (timestamp fx fy cx cy k1 k2 + 3x4 w2c)",
                                 field=f"line {lineno + 1}")
        if not all(math.isfinite(v) for v in vals):
            raise InputFileError(path, "non-finite number (nan / inf)", field=f"line {lineno + 1}")
        if not (vals[1] > 0 and vals[2] > 0):
            raise InputFileError(path, f"normalised focal lengths must be positive, got fx={vals[1]}, fy={vals[2]}",
                                 field=f"line {lineno + 1}")
        rows.append(vals)
        if len(rows) > limits.MAX_CAMERAS:
            raise InputFileError(path, f"more than {limits.MAX_CAMERAS} poses")
    if not rows:
        raise InputFileError(path, "no pose lines found; expected lines of 19 numbers")
    arr = np.asarray(rows, dtype=np.float64)
    n = len(arr)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = arr[:, 1] * width
    K[:, 1, 1] = arr[:, 2] * height
    K[:, 0, 2] = arr[:, 3] * width
    K[:, 1, 2] = arr[:, 4] * height
    K[:, 2, 2] = 1.0
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3, :] = arr[:, 7:19].reshape(n, 3, 4)
    return CameraTrajectory(torch.from_numpy(w2c).to(dtype), torch.from_numpy(K).to(dtype), height, width)


def write_realestate10k(traj: CameraTrajectory, path: Any = None, *, url: str = "",
                        timestamps: Sequence[int] | None = None) -> str:
    """RealEstate10K text of ``traj`` (first line ``url``; timestamps default to 0, 1, ...).

    Skew of ``K`` is not representable and is dropped. Written atomically to ``path`` when given.
    """
    _require_intrinsics(traj, "RealEstate10K output")
    n = len(traj)
    if timestamps is None:
        timestamps = list(range(n))
    if len(timestamps) != n:
        raise ValueError(f"timestamps: expected {n} entries (one per frame), got {len(timestamps)}")
    K = traj.K.double().cpu()  # type: ignore[union-attr]
    w2c = traj.w2c.double().cpu()
    lines = [url.strip()]
    W, H = float(traj.width), float(traj.height)  # type: ignore[arg-type]
    for i in range(n):
        vals = [K[i, 0, 0] / W, K[i, 1, 1] / H, K[i, 0, 2] / W, K[i, 1, 2] / H, 0.0, 0.0]
        vals += w2c[i, :3, :].reshape(-1).tolist()
        lines.append(" ".join([str(int(timestamps[i]))] + [repr(float(v)) for v in vals]))
    text = "\n".join(lines) + "\n"
    if path is not None:
        _write_text(path, text)
    return text


# ------------------------------------------------------------------------------------------ npz
def read_npz(path: Any, *, dtype: torch.dtype | None = None) -> CameraTrajectory:
    """Read ``w2c`` (N, 4, 4) and optional ``intrinsics`` (N, 3, 3) / (3, 3), ``image_height``,
    ``image_width`` from an ``.npz`` (pickle disabled). ``dtype=None`` keeps the stored float dtype.

    Raises:
        InputFileError: (a ``ValueError``) not an npz archive, ``w2c`` missing, a pickled or
            non-numeric array, fractional sizes, or intrinsics without the image size.
    """
    arrays = load_npz(path, "path", keys=("w2c", "intrinsics", "image_height", "image_width"))
    p = Path(path)
    with reading(p, "camera .npz file"):
        if "w2c" not in arrays:
            raise InputFileError(p, "has no 'w2c' array; expected w2c (N,4,4) [+ intrinsics (N,3,3), image_height, "
                                    "image_width]")
        for key in ("w2c", "intrinsics"):
            if key in arrays and arrays[key].dtype.kind not in "iuf":
                raise InputFileError(p, f"expected a numeric array, got dtype {arrays[key].dtype}", field=key)
        w2c = torch.from_numpy(np.array(arrays["w2c"]))
        K = torch.from_numpy(np.array(arrays["intrinsics"])) if "intrinsics" in arrays else None
        size = {}
        for key in ("image_height", "image_width"):
            if key in arrays:
                a = arrays[key]
                if a.size != 1 or a.dtype.kind not in "iuf":
                    raise InputFileError(p, f"expected one number, got an array of shape {a.shape} ({a.dtype})",
                                         field=key)
                size[key] = _size(a.reshape(()).item(), key, p)
        traj = CameraTrajectory(w2c, K, size.get("image_height"), size.get("image_width"))
    return traj if dtype is None else traj.to(dtype=dtype)


def write_npz(traj: CameraTrajectory, path: Any) -> None:
    """Write ``traj`` to ``path`` (``.npz``) atomically; intrinsics/size only when present."""
    arrays: dict[str, np.ndarray] = {"w2c": traj.w2c.detach().cpu().numpy()}
    if traj.K is not None:
        arrays["intrinsics"] = traj.K.detach().cpu().numpy()
    if traj.height is not None and traj.width is not None:
        arrays["image_height"] = np.asarray(traj.height, dtype=np.int64)
        arrays["image_width"] = np.asarray(traj.width, dtype=np.int64)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ---------------------------------------------------------------------------- own JSON format
def _is_matrix_list(value: Any, rows: int, cols: int) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(
        isinstance(m, list) and len(m) == rows and all(
            isinstance(r, list) and len(r) == cols and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in r) for r in m) for m in value))


def validate_trajectory_document(doc: Any) -> None:
    """Light validation of a trajectory document against ``trajectory.schema.json`` (no jsonschema).

    Raises:
        ValueError: naming the offending key.
    """
    if not isinstance(doc, dict):
        raise ValueError("document: expected a JSON object")
    if doc.get("format") != TRAJECTORY_FORMAT:
        raise ValueError(f"format: expected {TRAJECTORY_FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") != TRAJECTORY_VERSION:
        raise ValueError(f"version: expected {TRAJECTORY_VERSION}, got {doc.get('version')!r}")
    if doc.get("convention") != _CONVENTION:
        raise ValueError(f"convention: expected {_CONVENTION}, got {doc.get('convention')!r}")
    if not _is_matrix_list(doc.get("w2c"), 4, 4):
        raise ValueError("w2c: expected a non-empty list of 4x4 numeric matrices")
    n = len(doc["w2c"])
    if doc.get("num_frames", n) != n:
        raise ValueError(f"num_frames: {doc.get('num_frames')!r} does not match the {n} poses in w2c")
    K = doc.get("K")
    if K is not None and not (_is_matrix_list(K, 3, 3) and len(K) == n):
        raise ValueError(f"K: expected null or a list of {n} 3x3 numeric matrices")
    for key in ("height", "width"):
        v = doc.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= limits.MAX_IMAGE_SIDE):
            raise ValueError(f"{key}: expected null or a positive integer (at most {limits.MAX_IMAGE_SIDE}), got {v!r}")
    if K is not None and (doc.get("height") is None or doc.get("width") is None):
        raise ValueError("height/width: required when K is given")
    if doc.get("dtype", "float32") not in ("float32", "float64"):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {doc.get('dtype')!r}")
    if doc.get("units", "scene") not in TRAJECTORY_UNITS:
        raise ValueError(f"units: expected one of {list(TRAJECTORY_UNITS)}, got {doc.get('units')!r}")
    if not isinstance(doc.get("fov_intrinsics", False), bool) or (doc.get("fov_intrinsics") and K is None):
        raise ValueError(f"fov_intrinsics: expected a bool (true only with K), got {doc.get('fov_intrinsics')!r}")
    allowed = {"$schema", "format", "version", "convention", "num_frames", "height", "width", "dtype", "w2c", "K",
               "units", "fov_intrinsics", "metadata"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValueError(f"document: unknown keys {unknown}")


def save_trajectory(traj: CameraTrajectory, path: Any, *, metadata: dict | None = None) -> dict:
    """Write ``traj`` as our JSON trajectory file (atomic) and return the document.

    The file states its conventions explicitly (``convention``: world_to_camera / opencv / pixels)
    and the dtype, so :func:`load_trajectory` restores the exact numbers.
    """
    doc: dict = {
        "format": TRAJECTORY_FORMAT,
        "version": TRAJECTORY_VERSION,
        "convention": dict(_CONVENTION),
        "num_frames": len(traj),
        "height": traj.height,
        "width": traj.width,
        "dtype": "float64" if traj.w2c.dtype == torch.float64 else "float32",
        "w2c": _floats(traj.w2c),
        "K": None if traj.K is None else _floats(traj.K),
    }
    if traj.units != "scene":
        doc["units"] = traj.units
    if traj.fov_intrinsics:
        doc["fov_intrinsics"] = True
    if metadata:
        doc["metadata"] = metadata
    validate_trajectory_document(doc)
    _write_text(path, json.dumps(doc, indent=1))
    return doc


def load_trajectory(path: Any, *, dtype: torch.dtype | None = None) -> CameraTrajectory:
    """Read our JSON trajectory file (see ``trajectory.schema.json``).

    ``dtype=None`` uses the dtype stored in the file.

    Raises:
        InputFileError: (a ``ValueError``) the file is not JSON or the document does not follow the
            schema (the message names the file and the key).
    """
    doc, json_path = _read_json(path, "path")
    with reading(json_path, "trajectory file", option=None if json_path else "document"):
        try:
            validate_trajectory_document(doc)
        except ValueError as exc:
            raise InputFileError(json_path, str(exc)) from None
        stored = torch.float64 if doc.get("dtype") == "float64" else torch.float32
        dt = dtype or stored
        w2c = torch.tensor(doc["w2c"], dtype=torch.float64).to(dt)
        K = None if doc.get("K") is None else torch.tensor(doc["K"], dtype=torch.float64).to(dt)
        return CameraTrajectory(w2c, K, doc.get("height"), doc.get("width"), units=doc.get("units", "scene"),
                                fov_intrinsics=bool(doc.get("fov_intrinsics", False)))
