"""High-level 3D reconstruction from posed frames: :func:`reconstruct` -> :class:`Reconstruction`.

Conventions: cameras w2c OpenCV 4x4 with K in pixels; depth is z-depth; pixel (row r, column c) has its
centre at image coordinates ``(c + 0.5, r + 0.5)`` (the library convention: a point projecting to
``(u, v)`` lies in pixel (``floor(v)``, ``floor(u)``)); depth maps of another size are resampled to
the frames with pixel-centre nearest-neighbour sampling.

Everything runs in float32 PyTorch on the device of ``frames`` (CPU for NumPy input): inputs are
converted once here, results stay on that device (marching cubes and the mesh are CPU).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as _dc_field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldstereo.config_checks import check_float, check_int
from worldstereo.depth.user import MAX_DEPTH, MIN_USABLE_DEPTH
from worldstereo.geometry.pointcloud import PointCloud
from worldstereo.geometry.render import render_point_cloud

from ._common import CameraArrays, camera_arrays, frames_per_chunk, to_tensor
from .export import save_reconstruction
from .fusion import estimate_normals, fuse_depth_maps
from .mesh import mesh_from_tsdf, poisson_mesh, tsdf_fusion
from .metrics import METRIC_CHUNK_PIXELS, masked_psnr, psnr_batch, reprojection_psnr, ssim_batch
from .neural_field import GaussianField

__all__ = ["METHODS", "Reconstruction", "reconstruct"]

logger = logging.getLogger(__name__)

METHODS = ("point_cloud", "mesh", "neural_field")


@dataclass(eq=False)
class Reconstruction(Mapping[str, Any]):
    """Result of :func:`reconstruct`; also a read-only mapping (``rec["points"]``), as
    ``reconstruct_3d`` documents a dict.

    Attributes:
        points: (N,3) float32 world coordinates (same frame as the cameras' w2c), on the device of the
            frames (likewise ``colors``, ``normals``, ``depths``).
        colors: (N,3) float32 in [0,1].
        normals: (N,3) float32 unit normals oriented toward the observing cameras (or None).
        cameras: the input trajectory (CameraTrajectory).
        method: "point_cloud" | "mesh" | "neural_field".
        mesh: ``trimesh.Trimesh`` for "mesh", else None.
        field: :class:`~worldstereo.reconstruction.neural_field.GaussianField` for "neural_field", else None.
        depths: (T,H,W) float32 aligned depth maps used for fusion.
        depth_scales: (T,) float64 per-frame scale applied to the input depth (CPU).
        quality_metrics: dict of floats (``num_points``, ``reprojection_psnr``, ...).
    """

    points: torch.Tensor
    colors: torch.Tensor
    normals: torch.Tensor | None
    cameras: Any
    method: str
    mesh: Any = None
    field: Any = None
    depths: torch.Tensor | None = None
    depth_scales: torch.Tensor | None = None
    quality_metrics: dict[str, float] = _dc_field(default_factory=dict)

    _KEYS = ("points", "colors", "normals", "cameras", "mesh", "field", "quality_metrics", "method",
             "depths", "depth_scales")

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict with every key (``points``, ``colors``, ``normals``, ``cameras``, ``mesh``,
        ``field``, ``quality_metrics``, ``method``, ``depths``, ``depth_scales``)."""
        return {k: getattr(self, k) for k in self._KEYS}

    def point_cloud(self) -> Any:
        """The points as a ``worldstereo.geometry.PointCloud``."""
        return PointCloud(xyz=self.points, rgb=self.colors, normals=self.normals)

    def save(self, out_dir: Any, *, formats: tuple[str, ...] | None = None, frames: Any = None) -> dict[str, Any]:
        """Write the standard exports into ``out_dir``.

        See :func:`worldstereo.reconstruction.export.save_reconstruction`.
        """
        return save_reconstruction(self, out_dir, formats=formats, frames=frames)


def _check_options(*, method: Any, mesh_method: Any, voxel_size: Any, mesh_voxel_size: Any, scale_anchor: Any,
                   outlier_std_ratio: Any, field_iterations: Any, field_kwargs: Any, align_depth: Any,
                   compute_metrics: Any, progress: Any) -> None:
    """Validate the scalar options of :func:`reconstruct` (before any work)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if mesh_method not in ("tsdf", "poisson"):
        raise ValueError(f"mesh_method must be 'tsdf' or 'poisson'; got {mesh_method!r}")
    if scale_anchor not in ("first", "cameras"):
        raise ValueError(f"scale_anchor must be 'first' or 'cameras'; got {scale_anchor!r}")

    def positive(name: str, value: Any, optional: bool = True) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or not value > 0:
            raise ValueError(f"{name} must be a finite number > 0{' or None' if optional else ''}; got {value!r}")

    positive("voxel_size", voxel_size)
    positive("mesh_voxel_size", mesh_voxel_size)
    positive("outlier_std_ratio", outlier_std_ratio, optional=False)
    if isinstance(field_iterations, bool) or not isinstance(field_iterations, (int, np.integer)) \
            or not 0 <= field_iterations <= 1_000_000:
        raise ValueError(f"field_iterations must be an integer in [0, 1000000]; got {field_iterations!r}")
    if field_kwargs is not None and not isinstance(field_kwargs, dict):
        raise TypeError(f"field_kwargs must be a dict or None; got {type(field_kwargs).__name__}")
    _check_field_kwargs(field_kwargs or {})
    for name, value in (("align_depth", align_depth), ("compute_metrics", compute_metrics), ("progress", progress)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool; got {value!r}")


#: ``field_kwargs`` keys and their checks: ``init`` -> :meth:`GaussianField.from_points`, the others ->
#: :meth:`GaussianField.fit` (name -> (kind, low, high); kind "int" / "float" / "float?" (None allowed)).
_FIELD_INIT_OPTIONS = {"opacity": ("float", 1e-6, 1 - 1e-6), "sigma_scale": ("float", 1e-6, 1e6),
                       "k": ("int", 1, 256), "max_points": ("int?", 2, 100_000_000)}
_FIELD_FIT_OPTIONS = {"lr_means": ("float?", 1e-12, 1e3), "lr_color": ("float", 1e-12, 1e3),
                      "lr_opacity": ("float", 1e-12, 1e3), "lr_sigma": ("float", 1e-12, 1e3),
                      "seed": ("int", 0, 2**63 - 1)}


def _check_field_kwargs(field_kwargs: dict[str, Any]) -> None:
    """Every ``field_kwargs`` option known and within its range (before any work)."""
    def check(where: str, options: dict[str, Any], table: dict[str, tuple[str, float, float]]) -> None:
        for key, value in options.items():
            if key not in table:
                raise ValueError(f"{where}{key}: unknown neural-field option; expected one of {sorted(table)}")
            kind, lo, hi = table[key]
            if kind.startswith("int"):
                check_int(f"{where}{key}", value, int(lo), int(hi), allow_none=kind.endswith("?"))
            else:
                check_float(f"{where}{key}", value, lo, hi, allow_none=kind.endswith("?"))

    init = field_kwargs.get("init", {})
    if not isinstance(init, dict):
        raise TypeError(f"field_kwargs['init']: expected a dict of GaussianField.from_points options, got "
                        f"{type(init).__name__}")
    check("field_kwargs['init'].", init, _FIELD_INIT_OPTIONS)
    check("field_kwargs.", {k: v for k, v in field_kwargs.items() if k != "init"}, _FIELD_FIT_OPTIONS)


def _check_frames(frames: Any) -> Tensor:
    if isinstance(frames, (list, tuple)):
        frames = torch.stack([torch.as_tensor(f) for f in frames])
    if not isinstance(frames, (Tensor, np.ndarray)):
        raise TypeError(f"frames must be a (T,3,H,W) tensor/array in [0,1]; got {type(frames).__name__}")
    f = to_tensor(frames)
    if f.dim() != 4 or f.shape[1] != 3:
        raise ValueError(f"frames must have shape (T,3,H,W); got {tuple(f.shape)}")
    if f.shape[0] < 1 or f.shape[2] < 2 or f.shape[3] < 2:
        raise ValueError(f"frames must contain at least one frame of at least 2x2 pixels; got {tuple(f.shape)}")
    lo_t, hi_t = torch.aminmax(f)  # NaN propagates into the extremes
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("frames contain non-finite values")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"frames must be float in [0,1]; got range [{lo:.3g}, {hi:.3g}]")
    return f if 0.0 <= lo and hi <= 1.0 else f.clamp(0.0, 1.0)


def _resolve_depth(depth: Any, frames: Tensor, progress: bool) -> tuple[Tensor, Tensor]:
    """Depth maps (T,H,W) float32 + valid masks (on the frames' device) from an array or a
    DepthEstimator (resized to the frames)."""
    T, _, H, W = frames.shape
    dev = frames.device
    if depth is None:
        raise ValueError("depth is required: pass (T,H,W) depth maps or a DepthEstimator "
                         "(e.g. from worldstereo.depth)")
    if isinstance(depth, (Tensor, np.ndarray, list, tuple)):
        try:
            d = to_tensor(torch.stack([torch.as_tensor(x) for x in depth]) if isinstance(depth, (list, tuple))
                          else depth, device=dev)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError("depth must be (T,H,W) numeric depth maps or a DepthEstimator") from None
        if d.dim() == 4 and d.shape[1] == 1:
            d = d[:, 0]
        if d.dim() != 3 or d.shape[0] != T:
            raise ValueError(f"depth must have shape (T,H,W) with T={T}; got {tuple(d.shape)}")
        valid = torch.isfinite(d) & (d > 0)
    elif callable(depth):
        from tqdm.auto import tqdm

        ds, vs = [], []
        for t in tqdm(range(T), desc="depth", disable=not progress):
            pred = depth(frames[t])
            if not hasattr(pred, "depth"):
                raise TypeError("depth estimator must return a DepthPrediction (with .depth and .valid_mask)")
            ds.append(to_tensor(pred.depth, device=dev))
            vs.append(to_tensor(getattr(pred, "valid_mask", pred.depth > 0), dtype=torch.bool, device=dev))
        d, valid = torch.stack(ds), torch.stack(vs)
    else:
        raise TypeError(f"depth must be a (T,H,W) tensor/array or a DepthEstimator; got {type(depth).__name__}")
    if d.shape[1:] != (H, W):
        t_d = torch.where(valid, d, torch.zeros_like(d))[:, None]
        t_v = valid.float()[:, None]
        d = torch.nn.functional.interpolate(t_d, size=(H, W), mode="nearest-exact")[:, 0]
        valid = torch.nn.functional.interpolate(t_v, size=(H, W), mode="nearest-exact")[:, 0] > 0.5
    valid = valid & torch.isfinite(d) & (d > 0)
    if not bool(valid.any()):
        raise ValueError("depth: no valid (finite, positive) depth in any frame; nothing to reconstruct")
    top = float(d[valid].max())
    if top > MAX_DEPTH or top <= MIN_USABLE_DEPTH:
        raise ValueError(f"depth: valid depths reach {top:.4g}; expected z-depth in scene units in "
                         f"({MIN_USABLE_DEPTH:g}, {MAX_DEPTH:g}] (is the scale right?)")
    return torch.where(valid, d, torch.zeros_like(d)), valid


def _splat_psnr(xyz: Tensor, rgb: Tensor, frames: Tensor, cams: CameraArrays, depths: Tensor,
                rel_tol: float = 0.03) -> tuple[float, float]:
    """Mean masked PSNR/SSIM of 1-pixel z-buffer renders of coloured points against the frames.

    The points are rendered with the library renderer as a plain z-buffer
    (``render_point_cloud(..., point_radius=0)``: each point lands in the pixel that contains its
    projection). Only pixels whose front-most point lies on the frame's (aligned) depth surface
    (within ``rel_tol``) are compared, so that points seen through gaps between splats do not count.
    """
    T, _, H, W = frames.shape
    cloud = PointCloud(xyz.float(), rgb.float().clamp(0.0, 1.0))
    ps: list[float] = []
    ss: list[float] = []
    step = frames_per_chunk(H, W, METRIC_CHUNK_PIXELS)
    for f0 in range(0, T, step):
        out = render_point_cloud(cloud, cams.w2c[f0:f0 + step], cams.K[f0:f0 + step], H, W, point_radius=0.0)
        d = depths[f0:f0 + step]
        zbuf = out.depth[:, 0]
        m = (out.hole_mask[:, 0] == 0) & (d > 0) & ((zbuf - d).abs() <= rel_tol * d)
        enough = m.sum((1, 2)) >= 16
        if not bool(enough.any()):
            continue
        # the compared render holds the front-most points on the depth surface only (black elsewhere)
        img, ref, m = out.image[enough] * m[enough, None], frames[f0:f0 + step][enough], m[enough]
        ps += [p for p in psnr_batch(img, ref, m).tolist() if math.isfinite(p)]
        ss += ssim_batch(img, ref, m).tolist()
    return (sum(ps) / len(ps) if ps else float("nan")), (sum(ss) / len(ss) if ss else float("nan"))


def reconstruct(frames: Any, trajectory: Any, method: str = "point_cloud", depth: Any = None, *,
                reference_points: Any = None, voxel_size: float | None = None, align_depth: bool = True,
                scale_anchor: str = "first", outlier_std_ratio: float = 2.0, mesh_method: str = "tsdf",
                mesh_voxel_size: float | None = None, field_iterations: int = 300,
                field_kwargs: dict[str, Any] | None = None, compute_metrics: bool = True,
                progress: bool = True) -> Reconstruction:
    """Reconstruct a 3D scene from posed frames.

    Args:
        frames: (T,3,H,W) float in [0,1] (tensor on any device, or array); the reconstruction runs
            on this device.
        trajectory: ``CameraTrajectory`` of T cameras (w2c OpenCV, K for its height x width; K is
            rescaled to the frame size when they differ).
        method: "point_cloud" (fused coloured points), "mesh" (TSDF + marching cubes, or Open3D
            Poisson with ``mesh_method="poisson"``) or "neural_field" (3D Gaussians optimised on the
            frames, initialised from the fused points).
        depth: (T,H,W) z-depth maps in scene units (any resolution; resized nearest), or a
            ``DepthEstimator`` called on every frame (relative depth is fine: scales are aligned).
        reference_points: optional PointCloud / (M,3) points whose scale the depths are aligned to.
        voxel_size: fusion voxel edge (scene units); default 0.25 % of the scene diagonal.
        align_depth: estimate per-frame depth scales (see ``fusion.align_depth_scales``).
        scale_anchor: "first" (frame 0's depth is in trajectory units) or "cameras" (estimate the
            overall scale from the camera baselines too).
        outlier_std_ratio: statistical outlier removal threshold, a finite number > 0 (points whose
            mean neighbour distance exceeds the mean by this many standard deviations are dropped).
        mesh_voxel_size: TSDF voxel (default 2 x the fusion voxel).
        field_iterations: neural-field optimisation steps.
        field_kwargs: neural-field options: ``"init"`` -> keyword arguments of
            ``GaussianField.from_points`` (e.g. ``max_points``, ``sigma_scale``); every other key is
            passed to ``GaussianField.fit`` (e.g. ``lr_color``, ``seed``).
        compute_metrics: fill ``quality_metrics`` (re-projection PSNR/SSIM, point count...).
        progress: show tqdm progress bars.

    Returns:
        :class:`Reconstruction`.

    Raises:
        ValueError / TypeError: invalid inputs (checked before any heavy work): e.g. a negative,
            zero or NaN ``outlier_std_ratio`` / ``voxel_size``, a non-integer ``field_iterations``.
    """
    _check_options(method=method, mesh_method=mesh_method, voxel_size=voxel_size, mesh_voxel_size=mesh_voxel_size,
                   scale_anchor=scale_anchor, outlier_std_ratio=outlier_std_ratio, field_iterations=field_iterations,
                   field_kwargs=field_kwargs, align_depth=align_depth, compute_metrics=compute_metrics,
                   progress=progress)
    F = _check_frames(frames)
    T, _, H, W = F.shape
    dev = F.device
    cams = camera_arrays(trajectory, num_frames=T, height=H, width=W, name="trajectory", device=dev)
    ref_xyz = None
    if reference_points is not None:
        try:
            ref_xyz = to_tensor(reference_points.xyz if hasattr(reference_points, "xyz") else reference_points,
                                device=dev)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"reference_points must be a PointCloud or an (M,3) tensor/array; got "
                            f"{type(reference_points).__name__}") from None
        if ref_xyz.dim() != 2 or ref_xyz.shape[1] != 3 or ref_xyz.shape[0] == 0:
            raise ValueError(f"reference_points must be a PointCloud or non-empty (M,3); got shape "
                             f"{tuple(ref_xyz.shape)}")
        if not bool(torch.isfinite(ref_xyz).all()):
            raise ValueError("reference_points contain NaN or infinite coordinates")
    D, valid = _resolve_depth(depth, F, progress)

    fused = fuse_depth_maps(F, D, cams, valid, align=align_depth, anchor=scale_anchor, reference_xyz=ref_xyz,
                            voxel_size=voxel_size, outlier_std_ratio=outlier_std_ratio)
    D_al = D * fused.scales.to(device=dev, dtype=torch.float32)[:, None, None]
    xyz, rgb, normals = fused.xyz, fused.rgb, fused.normals
    mesh = field_obj = None
    metrics: dict[str, float] = {}
    if method == "mesh":
        if mesh_method == "poisson":
            mesh = poisson_mesh(xyz, rgb, normals)
        else:
            lo, hi = xyz.min(0).values, xyz.max(0).values
            fv = voxel_size if voxel_size is not None else float(torch.linalg.vector_norm(hi - lo)) * 0.0025
            mv = mesh_voxel_size if mesh_voxel_size is not None else 2.0 * fv
            margin = 4 * mv
            vol = tsdf_fusion(F, D_al, cams, voxel_size=mv, bounds=(lo.double() - margin, hi.double() + margin),
                              surface_points=xyz)
            mesh = mesh_from_tsdf(vol)
        metrics["num_vertices"] = float(len(mesh.vertices))
        metrics["num_faces"] = float(len(mesh.faces))
    elif method == "neural_field":
        field_obj = GaussianField.from_points(xyz, rgb, **{"device": dev, **(field_kwargs or {}).get("init", {})})
        train_kw = {k: v for k, v in (field_kwargs or {}).items() if k != "init"}
        field_obj.fit(F, cams, iterations=field_iterations, progress=progress, **train_kw)
        xyz, rgb = field_obj.points()
        # PCA normals of the Gaussian centres, oriented toward the nearest camera
        centers = cams.centers.to(xyz)
        nearest = centers[torch.cdist(xyz, centers).argmin(dim=1)] if len(xyz) else xyz
        normals = estimate_normals(xyz, toward=nearest - xyz)
    if compute_metrics:
        metrics["num_points"] = float(xyz.shape[0])
        if method == "neural_field":
            ps = [masked_psnr(field_obj.render(cams, t), F[t]) for t in range(T)]
            metrics["reprojection_psnr"] = sum(ps) / len(ps)
        else:
            if method == "mesh":
                vx = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=dev)
                vc = torch.as_tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32,
                                     device=dev)
                p, s = _splat_psnr(vx, vc, F, cams, D_al)
            else:
                p, s = _splat_psnr(xyz, rgb, F, cams, D_al)
            metrics["reprojection_psnr"] = p
            metrics["reprojection_ssim"] = s
        if T > 1:
            cons = reprojection_psnr(F, D_al, cams, ssim=False)
            metrics["frame_consistency_psnr"] = cons["reprojection_psnr"]
            metrics["frame_consistency_valid_fraction"] = cons["reprojection_valid_fraction"]
    return Reconstruction(points=xyz.float(), colors=rgb.float(), normals=None if normals is None else normals.float(),
                          cameras=trajectory, method=method, mesh=mesh, field=field_obj, depths=D_al,
                          depth_scales=fused.scales.to(torch.float64), quality_metrics=metrics)
