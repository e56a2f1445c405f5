"""`GlobalGeometricMemory`: an incrementally grown, capped point cloud of the scene.

It starts from the lifted depth of the condition image (reference §5.1), renders the point cloud
along a target trajectory to give the ControlNet branch its render video and hole mask, and grows
with the frames of each generated clip: the new frames' depth is scale-aligned to the depth the
memory renders at the same cameras, lifted, and merged; the point count is capped at
``max_points`` (voxel, then random down-sampling: never unbounded growth).

Conventions: ``w2c`` world-to-camera 4x4 (OpenCV: x right, y down, z forward), ``K`` 3x3 in pixels
of the rendered / given image, images float in [0,1], hole masks 1 = not covered by the points.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera.keyframes import sample_align_nframe
from ..depth.align import align_depth_scale
from ..geometry.lifting import lift_depth
from ..geometry.pointcloud import PointCloud
from ..geometry.render import render_point_cloud
from ..io.image import rescale_intrinsics, resize_image
from ..config_checks import check_bool, check_choice, check_float, check_int
from ._cameras import per_frame_cameras
from .limits import MEMORY_CONFIG_LIMITS

__all__ = ["GeometricRender", "GlobalGeometricMemory", "UPDATE_FREQUENCIES"]

logger = logging.getLogger(__name__)

UPDATE_FREQUENCIES = ("auto", "manual", "never")

#: ``renderer(points, w2c (F,4,4), K (F,3,3), height, width, point_radius=..., points_per_pixel=...)``
#: returning an object with ``image`` (F,3,H,W), ``depth`` (F,1,H,W) and ``hole_mask`` (F,1,H,W).
Renderer = Callable[..., Any]


@dataclass
class GeometricRender:
    """Point-cloud render along a trajectory.

    Attributes:
        video: (F,3,H,W) float in [0,1]; frame 0 is the condition image when one is known.
        hole_mask: (F,1,H,W) float {0,1}, 1 = hole; frame 0 is 0 when the condition image is used.
        depth: (F,1,H,W) rendered z-depth, 0 at holes (frame 0 is the rendered depth).
    """

    video: Tensor
    hole_mask: Tensor
    depth: Tensor


def _default_renderer(points: PointCloud, w2c: Tensor, K: Tensor, height: int, width: int, **kw: Any) -> Any:
    return render_point_cloud(points, w2c, K, height, width, **kw)


def _median_scale(depth: Tensor, reference: Tensor, mask: Tensor, min_pixels: int) -> float | None:
    """Scale of ``depth`` onto ``reference`` over ``mask`` (robust fit of
    :func:`worldstereo.depth.align_depth_scale`); ``None`` when fewer than ``min_pixels`` overlap."""
    try:
        return align_depth_scale(depth, reference.to(depth.device), mask, method="robust", min_pixels=min_pixels)
    except ValueError:
        return None


class GlobalGeometricMemory:
    """Global geometric memory (incremental point cloud).

    Args:
        max_points: cap on the number of points (1 - 10^9; None: no cap).
        update_frequency: ``"auto"`` (the pipeline's :meth:`maybe_update` after every generated
            video updates the memory), ``"manual"`` (only explicit :meth:`update` calls), ``"never"``
            (the memory stays as initialised; :meth:`update` is a logged no-op).
        point_radius, points_per_pixel: renderer settings (see ``render_point_cloud``).
        new_points_only: when updating, lift only the pixels the memory does not cover yet (its
            rendered hole mask) so that already-covered surfaces are not duplicated.
        min_overlap_pixels: pixels covered by both the memory render and the new depth needed to
            estimate the scale; with fewer, the frame's depth is used unscaled (logged).
        keyframes_per_update: frames of a clip used by :meth:`maybe_update` (chosen like the spatial
            memory's update frames: never frame 0, the last frame always).
        sobel_threshold, contract: lifting settings (reference defaults 0.35 and 8.0).
        renderer: replaces ``worldstereo.geometry.render.render_point_cloud`` (same signature).
        seed: seed of the random down-sampling.
    """

    def __init__(
        self,
        max_points: int | None = 2_000_000,
        update_frequency: str = "auto",
        point_radius: float = 0.008,
        points_per_pixel: int = 8,
        *,
        new_points_only: bool = True,
        min_overlap_pixels: int = 64,
        keyframes_per_update: int = 8,
        sobel_threshold: float | None = 0.35,
        contract: float | None = 8.0,
        renderer: Renderer | None = None,
        seed: int = 0,
    ) -> None:
        lim = MEMORY_CONFIG_LIMITS
        check_int("max_points", max_points, *lim["max_points"], allow_none=True)
        check_choice("update_frequency", update_frequency, UPDATE_FREQUENCIES)
        check_float("point_radius", point_radius, *lim["point_radius"], lo_exclusive=True)
        check_int("points_per_pixel", points_per_pixel, *lim["points_per_pixel"])
        check_bool("new_points_only", new_points_only)
        check_int("min_overlap_pixels", min_overlap_pixels, *lim["min_overlap_pixels"])
        check_int("keyframes_per_update", keyframes_per_update, *lim["keyframes_per_update"])
        check_float("sobel_threshold", sobel_threshold, *lim["sobel_threshold"], allow_none=True)
        check_float("contract", contract, *lim["contract"], lo_exclusive=True, allow_none=True)
        if renderer is not None and not callable(renderer):
            raise TypeError(f"renderer: expected a callable like render_point_cloud, got {type(renderer).__name__}")
        check_int("seed", seed, 0, 2**63 - 1)
        self.max_points = max_points
        self.update_frequency = update_frequency
        self.point_radius = float(point_radius)
        self.points_per_pixel = points_per_pixel
        self.new_points_only = new_points_only
        self.min_overlap_pixels = int(min_overlap_pixels)
        self.keyframes_per_update = keyframes_per_update
        self.sobel_threshold = sobel_threshold
        self.contract = contract
        self.renderer: Renderer = renderer if renderer is not None else _default_renderer
        self.seed = int(seed)
        self.points: PointCloud = PointCloud.empty()
        self.condition_image: Tensor | None = None
        self.num_updates = 0
        #: depth scale factors applied to the frames of the last :meth:`update` (diagnostics)
        self.last_update_scales: list[float] = []

    def __len__(self) -> int:
        return len(self.points)

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0

    # -- initialisation ---------------------------------------------------------------------

    def initialize(self, image: Tensor, depth: Tensor, K: Tensor, w2c: Tensor | None = None,
                   valid_mask: Tensor | None = None) -> "GlobalGeometricMemory":
        """Replace the memory with the lifted depth of the condition image (reference §5.1).

        Args:
            image: (3,H,W) float in [0,1] (the condition image; becomes render frame 0).
            depth: (H,W) z-depth in scene units (0 = invalid).
            K: (3,3) pixel intrinsics of ``image``.
            w2c: (4,4) world-to-camera of the condition view (default identity).
            valid_mask: optional (H,W) bool.

        Returns:
            ``self``.
        """
        img = torch.as_tensor(image)
        if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise ValueError(f"image: expected float (3,H,W) in [0,1], got {tuple(img.shape)} {img.dtype}")
        d = torch.as_tensor(depth)
        if d.ndim == 3 and d.shape[0] == 1:
            d = d[0]
        if d.shape != img.shape[1:]:
            raise ValueError(f"depth: expected shape {tuple(img.shape[1:])} matching image, got {tuple(d.shape)}")
        if not bool(torch.isfinite(d).all()) or bool((d < 0).any()):
            raise ValueError("depth: expected finite z-depth >= 0 (0 = invalid pixel); got NaN, infinite or negative "
                             "values")
        w, k = per_frame_cameras(torch.eye(4, dtype=torch.float64) if w2c is None else w2c, K, 1)
        pc = lift_depth(d.float(), k[0], w[0], img.float(), valid_mask=valid_mask,
                        sobel_threshold=self.sobel_threshold, contract=self.contract)
        self.points = self._cap(pc)
        self.condition_image = img.detach().float().cpu().clamp(0, 1)
        self.num_updates = 0
        logger.debug("GlobalGeometricMemory: initialised with %d points", len(self.points))
        return self

    def from_point_cloud(self, points: PointCloud | Tensor | np.ndarray, condition_image: Tensor | None = None
                         ) -> "GlobalGeometricMemory":
        """Replace the memory with a given cloud: a :class:`PointCloud` or (N,3) / (N,6) xyz[+rgb]
        (rgb in [0,1], uint8 rescaled). Capped at ``max_points``. Returns ``self``."""
        pc = points if isinstance(points, PointCloud) else PointCloud.from_tensor(points)
        self.points = self._cap(pc)
        self.condition_image = None if condition_image is None else torch.as_tensor(condition_image).float().cpu()
        self.num_updates = 0
        return self

    # -- rendering --------------------------------------------------------------------------

    def _raw_render(self, w2c: Tensor, K: Tensor, height: int, width: int) -> GeometricRender:
        n = w2c.shape[0]
        if self.is_empty:
            z = torch.zeros(n, 1, height, width)
            return GeometricRender(torch.zeros(n, 3, height, width), torch.ones(n, 1, height, width), z)
        out = self.renderer(self.points, w2c, K, height, width, point_radius=self.point_radius,
                            points_per_pixel=self.points_per_pixel)
        return GeometricRender(out.image.float(), out.hole_mask.float(), out.depth.float())

    def render(self, trajectory_w2c: Any, K: Tensor | None, height: int, width: int,
               condition_image: Tensor | None = None) -> GeometricRender:
        """Render the memory along a trajectory.

        Args:
            trajectory_w2c: (F,4,4) world-to-camera, or a ``CameraTrajectory`` (its intrinsics are
                used when ``K`` is None, rescaled to ``(height, width)``).
            K: (F,3,3) or (3,3) pixel intrinsics at ``(height, width)``.
            height, width: render size.
            condition_image: (3,h,w) in [0,1] put in frame 0 (resized to the render size) with hole
                mask 0 there, as the reference. Default: the image given to :meth:`initialize`;
                when neither exists frame 0 stays the render.

        Returns:
            :class:`GeometricRender`.
        """
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if hasattr(trajectory_w2c, "w2c"):
            traj = trajectory_w2c
            w2c = torch.as_tensor(traj.w2c, dtype=torch.float64)
            if K is None:
                if getattr(traj, "K", None) is None:
                    raise ValueError("K: required (the trajectory has no intrinsics)")
                K = torch.as_tensor(traj.K, dtype=torch.float64)
                th, tw = getattr(traj, "height", None), getattr(traj, "width", None)
                if th and tw and (th, tw) != (height, width):
                    K = rescale_intrinsics(K, (int(th), int(tw)), (height, width))
        else:
            w2c = torch.as_tensor(trajectory_w2c, dtype=torch.float64)
            if w2c.ndim == 2:
                w2c = w2c.unsqueeze(0)
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or w2c.shape[0] < 1:
            raise ValueError(f"trajectory_w2c: expected (F,4,4) world-to-camera, got {tuple(w2c.shape)}")
        if K is None:
            raise ValueError("K: required when trajectory_w2c is a tensor")
        Kt = torch.as_tensor(K, dtype=torch.float64)
        if Kt.ndim == 2:
            Kt = Kt.unsqueeze(0).expand(w2c.shape[0], 3, 3)
        if Kt.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"K: expected ({w2c.shape[0]},3,3) or (3,3), got {tuple(Kt.shape)}")
        out = self._raw_render(w2c, Kt.contiguous(), height, width)
        cond = condition_image if condition_image is not None else self.condition_image
        if cond is not None:
            c = torch.as_tensor(cond).float()
            if c.ndim != 3 or c.shape[0] != 3:
                raise ValueError(f"condition_image: expected (3,H,W) in [0,1], got {tuple(c.shape)}")
            out.video = out.video.clone()
            out.hole_mask = out.hole_mask.clone()
            out.video[0] = resize_image(c.cpu(), height, width).to(out.video.device)
            out.hole_mask[0] = 0.0
        return out

    # -- updates ----------------------------------------------------------------------------

    def update(self, frames: Tensor, w2c: Tensor, K: Tensor, depth_estimator: Callable[[Tensor], Any] | None = None,
               depths: Tensor | None = None, *, frame_indices: Sequence[int] | None = None) -> int:
        """Add generated frames to the memory.

        For each used frame: its depth (``depths[t]``, or ``depth_estimator(frame)`` returning a
        ``DepthPrediction``) is multiplied by the robust median of ``rendered / estimated`` depth over
        the pixels covered both by the memory's render at that camera and by the estimate (factor-2
        outlier rejection), lifted (only the uncovered pixels when ``new_points_only``), merged, and
        the result capped at ``max_points``. With ``update_frequency="never"`` nothing happens.

        Args:
            frames: (T,3,H,W) float in [0,1].
            w2c: (T,4,4) world-to-camera of the frames.
            K: (T,3,3) or (3,3) intrinsics at the frame size.
            depth_estimator: callable image (3,H,W) -> object with ``depth`` (H,W) and optionally
                ``valid_mask`` (H,W); used when ``depths`` is None.
            depths: (T,H,W) or (T,1,H,W) z-depth per frame (0 = invalid).
            frame_indices: the frames to use (default: all).

        Returns:
            The number of points added before capping (0 when nothing was done).
        """
        if self.update_frequency == "never":
            logger.info("GlobalGeometricMemory.update: update_frequency='never'; memory left unchanged")
            return 0
        fr = torch.as_tensor(frames)
        if fr.ndim != 4 or fr.shape[1] != 3 or not fr.is_floating_point():
            raise ValueError(f"frames: expected float (T,3,H,W) in [0,1], got {tuple(fr.shape)} {fr.dtype}")
        T, _, H, W = fr.shape
        w, Kt = per_frame_cameras(w2c, K, T)
        if depths is None and depth_estimator is None:
            raise ValueError("depth_estimator/depths: give one of them (depth of the new frames)")
        if depths is not None:
            dep = torch.as_tensor(depths)
            if dep.ndim == 4 and dep.shape[1] == 1:
                dep = dep[:, 0]
            if dep.shape != (T, H, W):
                raise ValueError(f"depths: expected ({T},{H},{W}) z-depth, got {tuple(dep.shape)}")
        idx = list(range(T)) if frame_indices is None else [int(i) for i in frame_indices]
        bad = [i for i in idx if not 0 <= i < T]
        if bad:
            raise ValueError(f"frame_indices: {bad} out of range [0, {T})")
        new_clouds: list[PointCloud] = []
        self.last_update_scales = []
        for i in idx:
            if depths is not None:
                d = dep[i].float()
                valid = torch.isfinite(d) & (d > 0)
            else:
                pred = depth_estimator(fr[i])  # type: ignore[misc]
                d = torch.as_tensor(pred.depth).float()
                if d.shape != (H, W):
                    raise ValueError(f"depth_estimator: returned depth of shape {tuple(d.shape)}, expected ({H},{W})")
                vm = getattr(pred, "valid_mask", None)
                valid = torch.isfinite(d) & (d > 0) & (torch.as_tensor(vm).bool() if vm is not None else True)
            rend = self._raw_render(w[i:i + 1], Kt[i:i + 1].contiguous(), H, W)
            covered = rend.hole_mask[0, 0] < 0.5
            rdepth = rend.depth[0, 0].to(d.device)
            scale = _median_scale(d, rdepth, covered.to(d.device) & valid, self.min_overlap_pixels)
            if scale is None:
                if not self.is_empty:
                    logger.warning("GlobalGeometricMemory.update: frame %d overlaps the memory in too few pixels "
                                   "to align its depth scale; using it unscaled", i)
                scale = 1.0
            self.last_update_scales.append(scale)
            keep = valid & ~covered.to(d.device) if self.new_points_only else valid
            pc = lift_depth(d * scale, Kt[i], w[i], fr[i].float(), valid_mask=keep,
                            sobel_threshold=self.sobel_threshold, contract=self.contract)
            logger.debug("GlobalGeometricMemory.update: frame %d scale %.4f, %d new points", i, scale, len(pc))
            new_clouds.append(pc)
        added = sum(len(c) for c in new_clouds)
        if added:
            self.points = self._cap(PointCloud.cat([self.points.to("cpu"), *[c.to("cpu") for c in new_clouds]]))
        self.num_updates += 1
        return added

    def maybe_update(self, frames: Tensor, w2c: Tensor, K: Tensor, depth_estimator: Callable[[Tensor], Any] | None = None,
                     depths: Tensor | None = None) -> int:
        """Pipeline hook after each generated video: updates only when ``update_frequency="auto"``.

        Uses the keyframes ``sample_align_nframe(T, min(keyframes_per_update, T - 1))`` of the clip
        (never frame 0, which the memory already holds). Returns the points added (0 if skipped).
        """
        if self.update_frequency != "auto":
            return 0
        T = int(torch.as_tensor(frames).shape[0])
        if T < 2:
            return 0
        idx = sample_align_nframe(T, min(self.keyframes_per_update, T - 1))
        return self.update(frames, w2c, K, depth_estimator, depths, frame_indices=idx)

    # -- capping ----------------------------------------------------------------------------

    def _cap(self, pc: PointCloud) -> PointCloud:
        """Down-sample to at most ``max_points``.

        A voxel size is searched (bisection in log scale, 12 steps) for the finest grid whose
        occupied-voxel count is ``<= max_points``; the cloud is voxel-averaged on it, and a final
        random down-sampling guarantees the cap.
        """
        if self.max_points is None or len(pc) <= self.max_points:
            return pc
        n0 = len(pc)
        xyz = pc.xyz.double()
        ext = float((xyz.amax(dim=0) - xyz.amin(dim=0)).max())
        out = pc
        if ext > 0 and math.isfinite(ext):
            lo, hi = math.log(ext * 1e-6), math.log(ext)  # hi: at most 8 voxels (<= max_points unless tiny)
            best: float | None = None
            for _ in range(12):
                mid = 0.5 * (lo + hi)
                if _voxel_count(xyz, math.exp(mid)) <= self.max_points:
                    best, hi = math.exp(mid), mid
                else:
                    lo = mid
            if best is not None:
                out = pc.voxel_down_sample(best)
        if len(out) > self.max_points:
            out = out.random_down_sample(self.max_points, generator=torch.Generator().manual_seed(self.seed + self.num_updates))
        logger.debug("GlobalGeometricMemory: capped %d -> %d points", n0, len(out))
        return out


def _voxel_count(xyz: Tensor, voxel: float) -> int:
    """Number of occupied voxels of edge ``voxel`` (origin-aligned grid)."""
    vox = torch.floor(xyz / voxel).long()
    vox = vox - vox.min(dim=0).values
    ext = vox.max(dim=0).values + 1
    if float(ext[0]) * float(ext[1]) * float(ext[2]) < 2**62:
        return int(torch.unique((vox[:, 0] * ext[1] + vox[:, 1]) * ext[2] + vox[:, 2]).numel())
    return int(torch.unique(vox, dim=0).shape[0])
