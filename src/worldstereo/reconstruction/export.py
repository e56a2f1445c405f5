"""Standard exports of a reconstruction, with readers for the camera formats (all writes atomic).

Formats:
    * points PLY (x,y,z, nx,ny,nz, red,green,blue) via ``worldstereo.io.ply``;
    * 3D Gaussian Splatting PLY (the layout of the original 3DGS code: x,y,z, nx,ny,nz, f_dc_0..2,
      f_rest_*, opacity (logit), scale_0..2 (log), rot_0..3 (quaternion w,x,y,z));
    * meshes: GLB / OBJ / PLY via trimesh;
    * nerfstudio ``transforms.json``: per-frame ``transform_matrix`` = c2w in **OpenGL** axes
      (x right, y up, z backward, i.e. OpenCV c2w with columns 1 and 2 negated), ``fl_x, fl_y, cx, cy,
      w, h`` per frame, ``file_path`` of the frame image;
    * COLMAP text model: ``cameras.txt`` (one PINHOLE camera per image: fx fy cx cy),
      ``images.txt`` (qvec = w2c rotation quaternion w,x,y,z; tvec = w2c translation; OpenCV axes),
      ``points3D.txt``;
    * WorldMirror ``cameras.json`` (reference-implementation §5.4): ``{"num_cameras", "extrinsics":
      [{"camera_id", "matrix": c2w 4x4}], "intrinsics": [{"camera_id", "matrix": K 3x3}]}`` with
      ``images/<camera_id>.png``.

Names: frame names / camera ids (from the caller or read from data) become file names only through
``worldstereo.io.paths.unique_names`` (sanitised, unique ignoring case) and every written path is built
with ``worldstereo.io.paths.safe_child``, so no exporter writes outside the folder it is given (not
through ``..``, absolute names or symbolic links inside it). The readers raise
``worldstereo.io.errors.InputFileError`` (a ``ValueError``) naming the file and field for any
malformed model, and read images only inside the model's folder.

Pixel convention: the library puts the centre of pixel (row r, column c) at image coordinates
``(c + 0.5, r + 0.5)`` (top-left pixel centre at (0.5, 0.5)), which is also COLMAP's and nerfstudio's
convention, so ``K`` is written and read unchanged (no cx/cy shift) in every format.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldstereo.io import limits
from worldstereo.io.atomic import atomic_write
from worldstereo.io.errors import InputFileError, reading
from worldstereo.io.files import finite_matrix, finite_number, read_json_file, read_text_file
from worldstereo.io.image import open_image_file
from worldstereo.io.paths import as_path, ensure_folder, safe_child, unique_names
from worldstereo.io.ply import write_ply

from ._common import CameraArrays, camera_arrays, to_numpy
from .viewer import write_viewer

__all__ = [
    "EXPORT_FORMATS",
    "GAUSSIAN_SH_C0",
    "read_colmap_text",
    "read_transforms_json",
    "read_worldmirror_cameras",
    "save_reconstruction",
    "write_colmap_text",
    "write_gaussians_ply",
    "write_mesh",
    "write_points_ply",
    "write_transforms_json",
    "write_worldmirror",
]

logger = logging.getLogger(__name__)

GAUSSIAN_SH_C0 = 0.28209479177387814  # zeroth real spherical-harmonic coefficient
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def _write_text(path: Path, text: str) -> None:
    ensure_folder(path.parent, "path")
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_png(path: Path, image: Any) -> None:
    from PIL import Image

    arr = to_numpy(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"frame must be (3,H,W) in [0,1]; got shape {arr.shape}")
    u8 = np.clip(arr.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
    ensure_folder(path.parent, "path")
    with atomic_write(path) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")


def _check_frames_for(frames: Any, cams: CameraArrays) -> np.ndarray | None:
    if frames is None:
        return None
    try:
        f = to_numpy(frames)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"frames: expected a (T,3,H,W) tensor or array in [0, 1], got {type(frames).__name__}") from exc
    if f.ndim != 4 or f.shape[0] != len(cams) or f.shape[1] != 3:
        raise ValueError(f"frames: expected shape (T,3,H,W) with T={len(cams)}; got shape {f.shape}")
    if f.size and (not np.isfinite(f).all() or f.min() < -1e-3 or f.max() > 1 + 1e-3):
        raise ValueError(f"frames: expected finite values in [0, 1], got range [{np.nanmin(f):.4g}, {np.nanmax(f):.4g}]")
    return f


def _finite_points(x: Any, name: str, n: int | None = None, *, unit: bool = False) -> np.ndarray:
    """(N, 3) float64 finite values (``unit``: in [0, 1]) of a tensor / array argument."""
    try:
        a = to_numpy(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an (N, 3) tensor or array, got {type(x).__name__}") from exc
    if a.ndim != 2 or a.shape[1] != 3 or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name}: expected shape ({'N' if n is None else n}, 3), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if unit and a.size and (a.min() < -1e-3 or a.max() > 1 + 1e-3):
        raise ValueError(f"{name}: expected values in [0, 1], got range [{a.min():.4g}, {a.max():.4g}]")
    return a


def write_points_ply(path: str | os.PathLike[str], xyz: Any, rgb: Any = None, normals: Any = None) -> Path:
    """Write a coloured point cloud (xyz (N,3), rgb (N,3) [0,1], normals (N,3)) as binary PLY."""
    p = as_path(path, "path")
    ensure_folder(p.parent, "path")
    write_ply(p, to_numpy(xyz, np.float32), None if rgb is None else to_numpy(rgb, np.float32),
              None if normals is None else to_numpy(normals, np.float32))
    return p


def write_gaussians_ply(path: str | os.PathLike[str], means: Any, rgb: Any, opacity: Any, scales: Any,
                        rotations: Any | None = None, *, sh_degree: int = 3, sh_rest: Any | None = None) -> Path:
    """Write 3D Gaussians in the standard 3DGS PLY layout.

    Args:
        means: (N,3) centres. rgb: (N,3) base colours in [0,1] (stored as f_dc = (rgb - 0.5) / C0).
        opacity: (N,) in (0,1) (stored as logit). scales: (N,3) or (N,) standard deviations (stored as log).
        rotations: (N,4) quaternions (w,x,y,z), default identity (normalised on write).
        sh_degree: number of SH bands of the layout; ``f_rest_*`` holds 3 * ((deg+1)^2 - 1) values
            (zeros unless ``sh_rest`` (N, 3*((deg+1)^2-1)) is given, channel-major as in 3DGS).
    """
    mu = to_numpy(means, np.float32)
    n = mu.shape[0]
    col = to_numpy(rgb, np.float32).reshape(n, 3)
    op = np.clip(to_numpy(opacity).reshape(n), 1e-6, 1 - 1e-6)
    sc = to_numpy(scales).reshape(n, -1)
    if sc.shape[1] == 1:
        sc = np.repeat(sc, 3, axis=1)
    if sc.shape[1] != 3 or np.any(sc <= 0):
        raise ValueError("scales must be positive (N,) or (N,3)")
    rot = np.tile([1.0, 0, 0, 0], (n, 1)) if rotations is None else to_numpy(rotations).reshape(n, 4)
    rot = rot / np.linalg.norm(rot, axis=1, keepdims=True)
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    rest = np.zeros((n, n_rest), np.float32) if sh_rest is None else to_numpy(sh_rest, np.float32).reshape(n, n_rest)
    extra: dict[str, np.ndarray] = {}
    for k in range(3):
        extra[f"f_dc_{k}"] = ((col[:, k] - 0.5) / GAUSSIAN_SH_C0).astype(np.float32)
    for k in range(n_rest):
        extra[f"f_rest_{k}"] = rest[:, k]
    extra["opacity"] = np.log(op / (1 - op)).astype(np.float32)
    for k in range(3):
        extra[f"scale_{k}"] = np.log(sc[:, k]).astype(np.float32)
    for k in range(4):
        extra[f"rot_{k}"] = rot[:, k].astype(np.float32)
    p = as_path(path, "path")
    ensure_folder(p.parent, "path")
    write_ply(p, mu, None, np.zeros((n, 3), np.float32), extra=extra)
    return p


def write_mesh(path: str | os.PathLike[str], mesh: Any) -> Path:
    """Write a ``trimesh.Trimesh`` as GLB / OBJ / PLY (chosen by the suffix), atomically."""
    p = as_path(path, "path")
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("glb", "obj", "ply"):
        raise ValueError(f"path: a mesh path must end in .glb, .obj or .ply; got {p.name!r}")
    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces") and callable(getattr(mesh, "export", None))):
        raise TypeError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    ensure_folder(p.parent, "path")
    with atomic_write(p) as tmp:
        mesh.export(tmp, file_type=fmt)
    return p


def _frame_names(n: int, names: Sequence[str] | None, what: str = "names") -> list[str]:
    """One safe, unique file name per camera (``worldstereo.io.paths.unique_names``)."""
    if names is None:
        return [f"{i:05d}" for i in range(n)]
    if isinstance(names, (str, bytes)) or len(names) != n:
        raise ValueError(f"{what} must be a sequence of {n} names; got {names!r:.80}")
    return unique_names(names, what=what)



@dataclass(frozen=True)
class _ExportCameras:
    """Float64 NumPy cameras for the file writers (w2c (N,4,4), c2w (N,4,4), K (N,3,3), image size)."""

    w2c: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.w2c.shape[0])


def _export_inputs(cameras: Any, frames: Any, names: Sequence[str] | None,
                   what: str = "names") -> tuple[_ExportCameras, Any, list[str]]:
    """Cameras of an export (rescaled to the frames when frames are given), the checked frames
    (or None) and one safe file name per camera."""
    cams = camera_arrays(cameras, name="cameras", device="cpu")
    f = _check_frames_for(frames, cams)
    if f is not None:
        cams = cams.resized(f.shape[2], f.shape[3])
    w2c, K = cams.numpy()
    out = _ExportCameras(w2c, np.linalg.inv(w2c), K, cams.height, cams.width)
    return out, f, _frame_names(len(cams), names, what)


def write_transforms_json(out_dir: str | os.PathLike[str], cameras: Any, frames: Any = None, *,
                          names: Sequence[str] | None = None, ply_file_path: str | None = None) -> Path:
    """Write a nerfstudio ``transforms.json`` (+ ``images/<name>.png`` when ``frames`` are given).

    Returns the path of ``transforms.json``.
    """
    cams, f, names = _export_inputs(cameras, frames, names)
    out = ensure_folder(out_dir, "out_dir")
    entries = []
    c2w = cams.c2w
    for i, nm in enumerate(names):
        rel = f"images/{nm}.png"
        if f is not None:
            _write_png(safe_child(out, rel), f[i])
        K = cams.K[i]
        entries.append({"file_path": rel, "transform_matrix": (c2w[i] @ _FLIP_YZ).tolist(),
                        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
                        "w": cams.width, "h": cams.height})
    doc: dict[str, Any] = {"camera_model": "OPENCV", "frames": entries}
    if ply_file_path is not None:
        doc["ply_file_path"] = ply_file_path
    path = safe_child(out, "transforms.json")
    _write_text(path, json.dumps(doc, indent=2))
    return path


def _image_side(value: Any, field: str, path: Any) -> int:
    return int(finite_number(value, field, path=path, integer=True, minimum=1, maximum=limits.MAX_IMAGE_SIDE))


def _rigid_inverse(m: np.ndarray, field: str, path: Any) -> np.ndarray:
    if abs(np.linalg.det(m[:3, :3])) < 1e-12 or not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise InputFileError(path, "not an invertible rigid pose (singular rotation or bad last row)", field=field)
    return np.linalg.inv(m)


def read_transforms_json(path: str | os.PathLike[str]) -> tuple[CameraArrays, list[str]]:
    """Read a ``transforms.json`` (per-frame or global intrinsics) -> (cameras, file paths).

    Raises:
        InputFileError: malformed file (names the file and the key).
    """
    doc = read_json_file(path, "path", "transforms.json file")
    with reading(path, "transforms.json file"):
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list) or not doc["frames"]:
            raise InputFileError(path, "expected an object with a non-empty 'frames' list", field="frames")
        w2c, Ks, files = [], [], []
        sizes = set()
        for i, fr in enumerate(doc["frames"]):
            if not isinstance(fr, dict):
                raise InputFileError(path, "expected an object", field=f"frames[{i}]")
            g = {**doc, **fr}
            for key in ("transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"):
                if key not in g:
                    raise InputFileError(path, f"missing key {key!r}", field=f"frames[{i}]")
            c2w = finite_matrix(fr["transform_matrix"], (4, 4), f"frames[{i}].transform_matrix", path=path) @ _FLIP_YZ
            w2c.append(_rigid_inverse(c2w, f"frames[{i}].transform_matrix", path))
            fx = finite_number(g["fl_x"], f"frames[{i}].fl_x", path=path, positive=True)
            fy = finite_number(g["fl_y"], f"frames[{i}].fl_y", path=path, positive=True)
            cx = finite_number(g["cx"], f"frames[{i}].cx", path=path)
            cy = finite_number(g["cy"], f"frames[{i}].cy", path=path)
            Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            sizes.add((_image_side(g["h"], f"frames[{i}].h", path), _image_side(g["w"], f"frames[{i}].w", path)))
            fp = fr.get("file_path", "")
            files.append(fp if isinstance(fp, str) else str(fp))
        if len(sizes) != 1:
            raise InputFileError(path, f"frames have different image sizes {sorted(sizes)}; not supported")
        (H, W), = sizes
        return CameraArrays(np.stack(w2c), np.asarray(Ks, dtype=np.float64), H, W), files


def _rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return q if q[0] >= 0 else -q


def _qvec_to_rotmat(q: Sequence[float]) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = q
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def write_colmap_text(out_dir: str | os.PathLike[str], cameras: Any, points: Any = None, colors: Any = None, *,
                      names: Sequence[str] | None = None, frames: Any = None) -> Path:
    """Write a COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``) into ``out_dir``.

    One PINHOLE camera per image (fx fy cx cy, unchanged: COLMAP's pixel centres are at +0.5 like
    ours); images are named ``<name>.png`` (names sanitised, see the module docstring; written to
    ``out_dir/images`` when ``frames`` are given). ``points`` (N,3)
    and ``colors`` (N,3) [0,1] fill ``points3D.txt`` (empty tracks). Returns ``out_dir``.
    """
    cams, f, names = _export_inputs(cameras, frames, names)
    pts_checked = None if points is None else _finite_points(points, "points")
    out = ensure_folder(out_dir, "out_dir")
    cam_lines = ["# Camera list with one line of data per camera:",
                 "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]", f"# Number of cameras: {len(cams)}"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)",
                 f"# Number of images: {len(cams)}"]
    for i in range(len(cams)):
        K = cams.K[i]
        if abs(K[0, 1]) > 1e-9:
            logger.warning("camera %d has skew %.3g; COLMAP PINHOLE drops it", i, K[0, 1])
        prm = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
        cam_lines.append(f"{i + 1} PINHOLE {cams.width} {cams.height} {' '.join(repr(x) for x in prm)}")
        q = _rotmat_to_qvec(cams.w2c[i, :3, :3])
        t = cams.w2c[i, :3, 3]
        img_lines.append(f"{i + 1} {' '.join(repr(float(x)) for x in q)} {' '.join(repr(float(x)) for x in t)} "
                         f"{i + 1} {names[i]}.png")
        img_lines.append("")
        if f is not None:
            _write_png(safe_child(out, "images", f"{names[i]}.png"), f[i])
    pts_lines = ["# 3D point list with one line of data per point:",
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    if pts_checked is not None:
        P = pts_checked
        C = np.full_like(P, 0.5) if colors is None else _finite_points(colors, "colors", len(P), unit=True)
        C8 = np.clip(C * 255 + 0.5, 0, 255).astype(int)
        pts_lines += [f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0" for k, (p, c) in
                      enumerate(zip(P.tolist(), C8.tolist()))]
    _write_text(safe_child(out, "cameras.txt"), "\n".join(cam_lines) + "\n")
    _write_text(safe_child(out, "images.txt"), "\n".join(img_lines) + "\n")
    _write_text(safe_child(out, "points3D.txt"), "\n".join(pts_lines) + "\n")
    return out


def read_colmap_text(model_dir: str | os.PathLike[str]) -> tuple[CameraArrays, list[str], np.ndarray, np.ndarray]:
    """Read a COLMAP text model -> (cameras sorted by IMAGE_ID, image names, points (N,3), colours (N,3) [0,1]).

    Supports the SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV camera
    models (distortion parameters are ignored with a warning); all images must share one image size.

    Raises:
        FileNotFoundError: ``cameras.txt`` / ``images.txt`` missing.
        InputFileError: malformed lines (names the file and the line).
    """
    d = Path(model_dir)
    cam_text = read_text_file(d / "cameras.txt", "model_dir", "COLMAP cameras.txt")
    img_text = read_text_file(d / "images.txt", "model_dir", "COLMAP images.txt")
    p3 = d / "points3D.txt"
    pts_text = read_text_file(p3, "model_dir", "COLMAP points3D.txt") if p3.exists() else ""
    cams: dict[int, tuple[int, int, np.ndarray]] = {}
    with reading(d / "cameras.txt", "COLMAP cameras.txt"):
        for lineno, line in enumerate(cam_text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            where = f"line {lineno}"
            tok = line.split()
            if len(tok) < 4:
                raise InputFileError(d / "cameras.txt", "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...", field=where)
            cid = int(finite_number(_num(tok[0], where), where, path=d / "cameras.txt", integer=True))
            model = tok[1]
            w = _image_side(_num(tok[2], f"{where} WIDTH"), f"{where} WIDTH", d / "cameras.txt")
            h = _image_side(_num(tok[3], f"{where} HEIGHT"), f"{where} HEIGHT", d / "cameras.txt")
            prm = [finite_number(_num(x, f"{where} PARAMS"), f"{where} PARAMS", path=d / "cameras.txt") for x in tok[4:]]
            needed = {"SIMPLE_PINHOLE": 3, "SIMPLE_RADIAL": 4, "RADIAL": 5, "PINHOLE": 4, "OPENCV": 8,
                      "FULL_OPENCV": 12}
            if model not in needed:
                raise InputFileError(d / "cameras.txt", f"unsupported camera model {model!r}; expected one of "
                                     f"{sorted(needed)}", field=where)
            if len(prm) < needed[model]:
                raise InputFileError(d / "cameras.txt", f"{model} needs {needed[model]} parameters, got {len(prm)}",
                                     field=where)
            if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
                fx = fy = prm[0]
                cx, cy = prm[1], prm[2]
            else:
                fx, fy, cx, cy = prm[:4]
            if not (fx > 0 and fy > 0):
                raise InputFileError(d / "cameras.txt", "focal lengths must be positive", field=where)
            if model not in ("SIMPLE_PINHOLE", "PINHOLE"):
                logger.warning("COLMAP camera %d (%s): distortion ignored", cid, model)
            cams[cid] = (w, h, np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]))
            if len(cams) > limits.MAX_CAMERAS:
                raise InputFileError(d / "cameras.txt", f"more than {limits.MAX_CAMERAS} cameras")
    rows = []
    with reading(d / "images.txt", "COLMAP images.txt"):
        lines = [(n, ln) for n, ln in enumerate(img_text.splitlines(), start=1) if not ln.startswith("#")]
        k = 0
        seen: set[int] = set()
        while k < len(lines):
            lineno, line = lines[k]
            if not line.strip():
                k += 1
                continue
            where = f"line {lineno}"
            tok = line.split()
            if len(tok) < 10:
                raise InputFileError(d / "images.txt", "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME",
                                     field=where)
            iid = int(finite_number(_num(tok[0], f"{where} IMAGE_ID"), f"{where} IMAGE_ID", path=d / "images.txt", integer=True))
            q = [finite_number(_num(x, f"{where} QVEC"), f"{where} QVEC", path=d / "images.txt") for x in tok[1:5]]
            t = [finite_number(_num(x, f"{where} TVEC"), f"{where} TVEC", path=d / "images.txt") for x in tok[5:8]]
            cid = int(finite_number(_num(tok[8], f"{where} CAMERA_ID"), f"{where} CAMERA_ID", path=d / "images.txt", integer=True))
            name = " ".join(tok[9:])
            if cid not in cams:
                raise InputFileError(d / "images.txt", f"CAMERA_ID {cid} is not in cameras.txt", field=where)
            if iid in seen:
                raise InputFileError(d / "images.txt", f"IMAGE_ID {iid} appears twice", field=where)
            seen.add(iid)
            if not 1e-6 < float(np.linalg.norm(q)) < 1e6:
                raise InputFileError(d / "images.txt", f"quaternion {q} has no usable norm", field=where)
            w2c = np.eye(4)
            w2c[:3, :3] = _qvec_to_rotmat(q)
            w2c[:3, 3] = t
            rows.append((iid, w2c, cid, name))
            if len(rows) > limits.MAX_CAMERAS:
                raise InputFileError(d / "images.txt", f"more than {limits.MAX_CAMERAS} images")
            k += 2  # skip the POINTS2D line
    if not rows:
        raise InputFileError(d / "images.txt", "no images; expected at least one IMAGE_ID line")
    rows.sort(key=lambda r: r[0])
    sizes = {cams[r[2]][:2] for r in rows}
    if len(sizes) != 1:
        raise InputFileError(d, f"images have different sizes {sorted(sizes)}; not supported")
    W, H = sizes.pop()
    pts, cols = [], []
    with reading(p3, "COLMAP points3D.txt"):
        for lineno, line in enumerate(pts_text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            tok = line.split()
            if len(tok) < 7:
                raise InputFileError(p3, "expected POINT3D_ID X Y Z R G B ...", field=f"line {lineno}")
            pts.append([finite_number(_num(x, f"line {lineno} XYZ"), f"line {lineno} XYZ", path=p3) for x in tok[1:4]])
            cols.append([finite_number(_num(x, f"line {lineno} RGB"), f"line {lineno} RGB", path=p3, integer=True, minimum=0,
                                       maximum=255) / 255.0 for x in tok[4:7]])
    ca = CameraArrays(np.stack([r[1] for r in rows]), np.stack([cams[r[2]][2] for r in rows]), H, W)
    return ca, [r[3] for r in rows], np.asarray(pts, dtype=np.float64).reshape(-1, 3), \
        np.asarray(cols, dtype=np.float64).reshape(-1, 3)


def _num(token: str, field: str) -> float:
    """A numeric token of a text model (``finite_number`` then checks it); non-numbers raise
    ``InputFileError`` naming ``field`` (the file is added by the caller's ``reading`` context)."""
    try:
        return float(token)
    except ValueError:
        raise InputFileError(None, f"expected a number, got {token[:40]!r}", field=field) from None


def write_worldmirror(out_dir: str | os.PathLike[str], cameras: Any, frames: Any = None, *,
                      camera_ids: Sequence[str] | None = None) -> Path:
    """Write WorldMirror's ``cameras.json`` (c2w extrinsics + K intrinsics) and ``images/<id>.png``.

    ``K`` is expressed for the frames' size when frames are given. Returns the path of ``cameras.json``.
    """
    cams, f, ids = _export_inputs(cameras, frames, camera_ids, "camera_ids")
    out = ensure_folder(out_dir, "out_dir")
    c2w = cams.c2w
    if f is not None:
        for i, cid in enumerate(ids):
            _write_png(safe_child(out, "images", f"{cid}.png"), f[i])
    doc = {"num_cameras": len(cams),
           "extrinsics": [{"camera_id": cid, "matrix": c2w[i].tolist()} for i, cid in enumerate(ids)],
           "intrinsics": [{"camera_id": cid, "matrix": cams.K[i].tolist()} for i, cid in enumerate(ids)]}
    path = safe_child(out, "cameras.json")
    _write_text(path, json.dumps(doc, indent=2))
    return path


def read_worldmirror_cameras(path: str | os.PathLike[str], *, height: int | None = None,
                             width: int | None = None) -> tuple[CameraArrays, list[str]]:
    """Read a WorldMirror ``cameras.json`` -> (cameras, camera ids in file order).

    The image size is taken from ``images/<first id>.png`` next to the file unless given.
    """
    p = Path(path)
    doc = read_json_file(p, "path", "WorldMirror cameras.json")
    with reading(p, "WorldMirror cameras.json"):
        if not isinstance(doc, dict) or not isinstance(doc.get("extrinsics"), list) or \
                not isinstance(doc.get("intrinsics"), list) or not doc["extrinsics"]:
            raise InputFileError(p, "expected an object with non-empty 'extrinsics' and 'intrinsics' lists")
        ext: dict[str, np.ndarray] = {}
        intr: dict[str, np.ndarray] = {}
        ids: list[str] = []
        for key, shape, table in (("extrinsics", (4, 4), ext), ("intrinsics", (3, 3), intr)):
            for i, e in enumerate(doc[key]):
                if not isinstance(e, dict) or "camera_id" not in e or "matrix" not in e:
                    raise InputFileError(p, "expected an object with 'camera_id' and 'matrix'", field=f"{key}[{i}]")
                cid = e["camera_id"]
                if isinstance(cid, bool) or not isinstance(cid, (str, int)):
                    raise InputFileError(p, f"expected a string camera id, got {type(cid).__name__}",
                                         field=f"{key}[{i}].camera_id")
                cid = str(cid)
                if cid in table:
                    raise InputFileError(p, f"camera id {cid!r} appears twice", field=f"{key}[{i}]")
                table[cid] = finite_matrix(e["matrix"], shape, f"{key}[{i}].matrix", path=p)
                if key == "extrinsics":
                    ids.append(cid)
        if set(ids) != set(intr):
            raise InputFileError(p, "extrinsics and intrinsics list different camera ids")
        if "num_cameras" in doc:
            finite_number(doc["num_cameras"], "num_cameras", path=p, integer=True, minimum=len(ids), maximum=len(ids))
        if height is None or width is None:
            try:
                img = safe_child(p.parent, "images", f"{ids[0]}.png", what="camera_id")
            except ValueError as exc:
                raise InputFileError(p, str(exc), field="extrinsics[0].camera_id") from None
            if not img.exists():
                raise InputFileError(p, f"pass height/width (no {img} to read the image size from)")
            with open_image_file(img, "image") as im:
                width, height = im.size
        w2c = np.stack([_rigid_inverse(ext[i], f"camera {i!r}", p) for i in ids])
        return CameraArrays(w2c, np.stack([intr[i] for i in ids]), int(height), int(width)), ids


def as_reconstruction(rec: Any, name: str = "rec") -> Any:
    """``rec`` as an object with ``points``, ``colors``, ``normals``, ``cameras``, ``mesh``,
    ``field`` and ``method`` attributes: a :class:`~worldstereo.reconstruction.Reconstruction`, or a
    mapping with those keys (the dict :func:`worldstereo.reconstruct_3d` returns).

    Raises:
        TypeError: neither; ValueError: no ``points`` / ``colors``.
    """
    from types import SimpleNamespace
    from collections.abc import Mapping

    if isinstance(rec, Mapping):
        missing = [k for k in ("points", "colors") if rec.get(k) is None]
        if missing:
            raise ValueError(f"{name}: the reconstruction has no {missing}")
        return SimpleNamespace(**{k: rec.get(k) for k in ("points", "colors", "normals", "cameras", "mesh", "field")},
                               method=rec.get("method", "reconstruction"))
    if not all(hasattr(rec, k) for k in ("points", "colors")):
        raise TypeError(f"{name}: expected a Reconstruction (or the dict of reconstruct_3d), got {type(rec).__name__}")
    return rec


EXPORT_FORMATS = ("ply", "gaussians", "mesh_glb", "mesh_obj", "mesh_ply", "transforms", "colmap", "worldmirror",
                  "viewer")


def save_reconstruction(rec: Any, out_dir: str | os.PathLike[str], *, formats: Sequence[str] | None = None,
                        frames: Any = None) -> dict[str, Path]:
    """Write the exports of a :class:`~worldstereo.reconstruction.Reconstruction` into ``out_dir``.

    Args:
        rec: the reconstruction.
        formats: subset of ``EXPORT_FORMATS``; default: ``ply``, ``transforms``, ``colmap``,
            ``worldmirror``, ``viewer``, plus ``mesh_glb`` for meshes and ``gaussians`` for neural fields.
        frames: (T,3,H,W) [0,1] frames written as images for the camera formats (optional).

    Returns:
        format -> written path.
    """
    rec = as_reconstruction(rec)
    if formats is not None and (isinstance(formats, (str, bytes)) or not isinstance(formats, Sequence)):
        raise TypeError(f"formats: expected a list of format names, got {type(formats).__name__} {formats!r:.60}")
    if formats is not None and not formats:
        raise ValueError(f"formats: expected at least one of {EXPORT_FORMATS}, got an empty list")
    if formats is None:
        formats = ["ply", "transforms", "colmap", "worldmirror", "viewer"]
        if rec.mesh is not None:
            formats.append("mesh_glb")
        if rec.field is not None:
            formats.append("gaussians")
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad:
        raise ValueError(f"formats: unknown {bad}; choose from {EXPORT_FORMATS}")
    if any(f.startswith("mesh_") for f in formats) and rec.mesh is None:
        raise ValueError("formats: mesh exports need a reconstruction made with method='mesh'")
    if "gaussians" in formats and rec.field is None:
        raise ValueError("formats: 'gaussians' needs a reconstruction made with method='neural_field'")
    out = ensure_folder(out_dir, "out_dir")
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "ply":
            written[fmt] = write_points_ply(safe_child(out, "points.ply"), rec.points, rec.colors, rec.normals)
        elif fmt == "gaussians":
            written[fmt] = rec.field.save_ply(safe_child(out, "gaussians.ply"))
        elif fmt.startswith("mesh_"):
            written[fmt] = write_mesh(safe_child(out, f"mesh.{fmt[5:]}"), rec.mesh)
        elif fmt == "transforms":
            written[fmt] = write_transforms_json(safe_child(out, "nerfstudio", is_folder=True), rec.cameras, frames,
                                                 ply_file_path="../points.ply")
        elif fmt == "colmap":
            written[fmt] = write_colmap_text(safe_child(out, "colmap", is_folder=True), rec.cameras, rec.points,
                                             rec.colors, frames=frames)
        elif fmt == "worldmirror":
            written[fmt] = write_worldmirror(safe_child(out, "worldmirror", is_folder=True), rec.cameras, frames)
        elif fmt == "viewer":
            written[fmt] = write_viewer(safe_child(out, "viewer.html"), rec)
    return written
