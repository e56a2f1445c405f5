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

from worldstereo.io.atomic import atomic_write

from ._common import CameraArrays, camera_arrays, to_numpy

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
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_png(path: Path, image: Any) -> None:
    from PIL import Image

    arr = to_numpy(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"frame must be (3,H,W) in [0,1]; got shape {arr.shape}")
    u8 = np.clip(arr.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")


def _check_frames_for(frames: Any, cams: CameraArrays) -> np.ndarray | None:
    if frames is None:
        return None
    f = to_numpy(frames)
    if f.ndim != 4 or f.shape[0] != len(cams) or f.shape[1] != 3:
        raise ValueError(f"frames must be (T,3,H,W) with T={len(cams)}; got shape {f.shape}")
    return f


def write_points_ply(path: str | os.PathLike[str], xyz: Any, rgb: Any = None, normals: Any = None) -> Path:
    """Write a coloured point cloud (xyz (N,3), rgb (N,3) [0,1], normals (N,3)) as binary PLY."""
    from worldstereo.io.ply import write_ply

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
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
    from worldstereo.io.ply import write_ply

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
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_ply(p, mu, None, np.zeros((n, 3), np.float32), extra=extra)
    return p


def write_mesh(path: str | os.PathLike[str], mesh: Any) -> Path:
    """Write a ``trimesh.Trimesh`` as GLB / OBJ / PLY (chosen by the suffix), atomically."""
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("glb", "obj", "ply"):
        raise ValueError(f"mesh path must end in .glb, .obj or .ply; got {p.name!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(p) as tmp:
        mesh.export(tmp, file_type=fmt)
    return p


def _frame_names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"{i:05d}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"names must have {n} entries; got {len(names)}")
    return [str(x) for x in names]



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


def _export_inputs(cameras: Any, frames: Any, names: Sequence[str] | None) -> tuple[_ExportCameras, Any, list[str]]:
    """Cameras of an export (rescaled to the frames when frames are given), the checked frames
    (or None) and one name per camera."""
    cams = camera_arrays(cameras, name="cameras", device="cpu")
    f = _check_frames_for(frames, cams)
    if f is not None:
        cams = cams.resized(f.shape[2], f.shape[3])
    w2c, K = cams.numpy()
    out = _ExportCameras(w2c, np.linalg.inv(w2c), K, cams.height, cams.width)
    return out, f, _frame_names(len(cams), names)


def write_transforms_json(out_dir: str | os.PathLike[str], cameras: Any, frames: Any = None, *,
                          names: Sequence[str] | None = None, ply_file_path: str | None = None) -> Path:
    """Write a nerfstudio ``transforms.json`` (+ ``images/<name>.png`` when ``frames`` are given).

    Returns the path of ``transforms.json``.
    """
    cams, f, names = _export_inputs(cameras, frames, names)
    out = Path(out_dir)
    entries = []
    c2w = cams.c2w
    for i, nm in enumerate(names):
        rel = f"images/{nm}.png"
        if f is not None:
            _write_png(out / rel, f[i])
        K = cams.K[i]
        entries.append({"file_path": rel, "transform_matrix": (c2w[i] @ _FLIP_YZ).tolist(),
                        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
                        "w": cams.width, "h": cams.height})
    doc: dict[str, Any] = {"camera_model": "OPENCV", "frames": entries}
    if ply_file_path is not None:
        doc["ply_file_path"] = ply_file_path
    path = out / "transforms.json"
    _write_text(path, json.dumps(doc, indent=2))
    return path


def read_transforms_json(path: str | os.PathLike[str]) -> tuple[CameraArrays, list[str]]:
    """Read a ``transforms.json`` (per-frame or global intrinsics) -> (cameras, file paths)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if "frames" not in doc or not doc["frames"]:
        raise ValueError(f"{path}: no 'frames' in transforms.json")
    w2c, Ks, files = [], [], []
    H = W = None
    for fr in doc["frames"]:
        g = {**doc, **fr}
        c2w = np.asarray(fr["transform_matrix"], dtype=np.float64) @ _FLIP_YZ
        w2c.append(np.linalg.inv(c2w))
        Ks.append([[g["fl_x"], 0.0, g["cx"]], [0.0, g["fl_y"], g["cy"]], [0.0, 0.0, 1.0]])
        H, W = int(g["h"]), int(g["w"])
        files.append(fr.get("file_path", ""))
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
    ours); images are named ``<name>.png`` (written to ``out_dir/images`` when ``frames`` are given). ``points`` (N,3)
    and ``colors`` (N,3) [0,1] fill ``points3D.txt`` (empty tracks). Returns ``out_dir``.
    """
    cams, f, names = _export_inputs(cameras, frames, names)
    out = Path(out_dir)
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
            _write_png(out / "images" / f"{names[i]}.png", f[i])
    pts_lines = ["# 3D point list with one line of data per point:",
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    if points is not None:
        P = to_numpy(points)
        C = np.full_like(P, 0.5) if colors is None else to_numpy(colors)
        C8 = np.clip(C * 255 + 0.5, 0, 255).astype(int)
        pts_lines += [f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0" for k, (p, c) in
                      enumerate(zip(P.tolist(), C8.tolist()))]
    _write_text(out / "cameras.txt", "\n".join(cam_lines) + "\n")
    _write_text(out / "images.txt", "\n".join(img_lines) + "\n")
    _write_text(out / "points3D.txt", "\n".join(pts_lines) + "\n")
    return out


def read_colmap_text(model_dir: str | os.PathLike[str]) -> tuple[CameraArrays, list[str], np.ndarray, np.ndarray]:
    """Read a COLMAP text model -> (cameras sorted by IMAGE_ID, image names, points (N,3), colours (N,3) [0,1]).

    Supports the SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL and OPENCV camera models (distortion
    parameters are ignored with a warning); all images must share one image size.
    """
    d = Path(model_dir)
    cams: dict[int, tuple[int, int, np.ndarray]] = {}
    for line in (d / "cameras.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tok = line.split()
        cid, model, w, h = int(tok[0]), tok[1], int(tok[2]), int(tok[3])
        prm = [float(x) for x in tok[4:]]
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = prm[0]
            cx, cy = prm[1], prm[2]
        elif model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            fx, fy, cx, cy = prm[:4]
        else:
            raise ValueError(f"{d / 'cameras.txt'}: unsupported camera model {model!r}")
        if model not in ("SIMPLE_PINHOLE", "PINHOLE"):
            logger.warning("COLMAP camera %d (%s): distortion ignored", cid, model)
        cams[cid] = (w, h, np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]))
    rows = []
    lines = [ln for ln in (d / "images.txt").read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        tok = lines[k].split()
        iid, q, t, cid, name = int(tok[0]), [float(x) for x in tok[1:5]], [float(x) for x in tok[5:8]], int(tok[8]), \
            " ".join(tok[9:])
        w2c = np.eye(4)
        w2c[:3, :3] = _qvec_to_rotmat(q)
        w2c[:3, 3] = t
        rows.append((iid, w2c, cid, name))
        k += 2  # skip the POINTS2D line
    rows.sort(key=lambda r: r[0])
    sizes = {cams[r[2]][:2] for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"{d}: images have different sizes {sorted(sizes)}; not supported")
    W, H = sizes.pop()
    pts, cols = [], []
    p3 = d / "points3D.txt"
    if p3.exists():
        for line in p3.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            tok = line.split()
            pts.append([float(x) for x in tok[1:4]])
            cols.append([int(x) / 255.0 for x in tok[4:7]])
    ca = CameraArrays(np.stack([r[1] for r in rows]), np.stack([cams[r[2]][2] for r in rows]), H, W)
    return ca, [r[3] for r in rows], np.asarray(pts, dtype=np.float64).reshape(-1, 3), \
        np.asarray(cols, dtype=np.float64).reshape(-1, 3)


def write_worldmirror(out_dir: str | os.PathLike[str], cameras: Any, frames: Any = None, *,
                      camera_ids: Sequence[str] | None = None) -> Path:
    """Write WorldMirror's ``cameras.json`` (c2w extrinsics + K intrinsics) and ``images/<id>.png``.

    ``K`` is expressed for the frames' size when frames are given. Returns the path of ``cameras.json``.
    """
    cams, f, ids = _export_inputs(cameras, frames, camera_ids)
    out = Path(out_dir)
    c2w = cams.c2w
    if f is not None:
        for i, cid in enumerate(ids):
            _write_png(out / "images" / f"{cid}.png", f[i])
    doc = {"num_cameras": len(cams),
           "extrinsics": [{"camera_id": cid, "matrix": c2w[i].tolist()} for i, cid in enumerate(ids)],
           "intrinsics": [{"camera_id": cid, "matrix": cams.K[i].tolist()} for i, cid in enumerate(ids)]}
    path = out / "cameras.json"
    _write_text(path, json.dumps(doc, indent=2))
    return path


def read_worldmirror_cameras(path: str | os.PathLike[str], *, height: int | None = None,
                             width: int | None = None) -> tuple[CameraArrays, list[str]]:
    """Read a WorldMirror ``cameras.json`` -> (cameras, camera ids in file order).

    The image size is taken from ``images/<first id>.png`` next to the file unless given.
    """
    p = Path(path)
    doc = json.loads(p.read_text(encoding="utf-8"))
    try:
        ext = {e["camera_id"]: np.asarray(e["matrix"], dtype=np.float64) for e in doc["extrinsics"]}
        intr = {e["camera_id"]: np.asarray(e["matrix"], dtype=np.float64) for e in doc["intrinsics"]}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{p}: not a WorldMirror cameras.json ({exc})") from exc
    ids = [e["camera_id"] for e in doc["extrinsics"]]
    if set(ids) != set(intr):
        raise ValueError(f"{p}: extrinsics and intrinsics list different camera ids")
    if height is None or width is None:
        img = p.parent / "images" / f"{ids[0]}.png"
        if not img.exists():
            raise ValueError(f"{p}: pass height/width (no {img} to read the image size from)")
        from PIL import Image

        with Image.open(img) as im:
            width, height = im.size
    w2c = np.stack([np.linalg.inv(ext[i]) for i in ids])
    return CameraArrays(w2c, np.stack([intr[i] for i in ids]), int(height), int(width)), ids


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "ply":
            written[fmt] = write_points_ply(out / "points.ply", rec.points, rec.colors, rec.normals)
        elif fmt == "gaussians":
            written[fmt] = rec.field.save_ply(out / "gaussians.ply")
        elif fmt.startswith("mesh_"):
            written[fmt] = write_mesh(out / f"mesh.{fmt[5:]}", rec.mesh)
        elif fmt == "transforms":
            written[fmt] = write_transforms_json(out / "nerfstudio", rec.cameras, frames, ply_file_path="../points.ply")
        elif fmt == "colmap":
            written[fmt] = write_colmap_text(out / "colmap", rec.cameras, rec.points, rec.colors, frames=frames)
        elif fmt == "worldmirror":
            written[fmt] = write_worldmirror(out / "worldmirror", rec.cameras, frames)
        elif fmt == "viewer":
            from .viewer import write_viewer

            written[fmt] = write_viewer(out / "viewer.html", rec)
    return written
