"""A small 3D-Gaussian neural field with a pure-PyTorch (CPU-capable) differentiable rasteriser.

Model: N isotropic 3D Gaussians (centre, log standard deviation, colour logits, opacity logit),
initialised from a fused point cloud and optimised photometrically on posed frames.

Rasteriser (exact front-to-back alpha compositing, no tiles): every Gaussian is projected with the
pinhole camera (w2c OpenCV, K pixels; :func:`worldstereo.geometry.projection.project_points`) and splatted over a (2R+1)^2 pixel footprint around its
projected centre (pixel (row r, column c) is evaluated at its centre ``(c + 0.5, r + 0.5)``, the
library convention; the footprint is centred on the pixel that contains the projection), with
pixel-space standard deviation ``f * sigma / z`` (clamped to [0.3, R/2] px) and alpha
``opacity * exp(-d^2 / (2 s^2))``. The (pixel, Gaussian) fragments with alpha >= 1/255 are sorted by
pixel and depth; per pixel the transmittance ``T_k = prod_{j<k} (1 - alpha_j)`` is a
segmented exclusive cumulative sum of ``log(1 - alpha)``, and the colour is
``sum_k alpha_k T_k c_k + T_end * background``. Everything is differentiable with respect to centres,
scales, colours and opacities; the cost is linear in the number of fragments, which makes 128x128
training on a CPU practical. ``gsplat`` is not needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worldstereo.geometry.neighbors import knn_points
from worldstereo.geometry.projection import project_points

from ._common import CameraArrays, camera_arrays, median, to_tensor
from .export import write_gaussians_ply
from .fusion import voxel_down_sample
from .mesh import mesh_from_tsdf, tsdf_fusion

__all__ = ["GaussianField", "rasterize_gaussians"]

logger = logging.getLogger(__name__)


def rasterize_gaussians(means: Tensor, sigmas: Tensor, colors: Tensor, opacities: Tensor, w2c: Tensor, K: Tensor,
                        height: int, width: int, *, radius: int = 2, background: Tensor | None = None,
                        near: float = 1e-3, return_depth: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Differentiable render of isotropic 3D Gaussians.

    Args:
        means: (N,3) world centres. sigmas: (N,) world standard deviations (> 0).
        colors: (N,3) in [0,1]. opacities: (N,) in [0,1].
        w2c: (4,4) world-to-camera (OpenCV). K: (3,3) pixel intrinsics of the (height, width) image.
        radius: footprint half-size R in pixels.
        background: (3,) colour behind the Gaussians (default black).
        return_depth: also return the expected z-depth (H,W) (normalised by the accumulated alpha)
            and the accumulated alpha (H,W).

    Returns:
        (3,H,W) image, or (image, depth, alpha) with ``return_depth``.
    """
    dev, dt = means.device, means.dtype
    w2c = w2c.to(dev, dt)
    K = K.to(dev, dt)
    with torch.no_grad():  # frustum culling before the footprint expansion
        uu, vv, cz = (x[0] for x in project_points(means, w2c, K, near=near))
        vis = (cz > near) & (uu > -radius - 1) & (uu < width + radius) & (vv > -radius - 1) & (vv < height + radius)
    idx = vis.nonzero().squeeze(1)
    u, v, zv = (x[0] for x in project_points(means[idx], w2c, K, near=near))
    order = torch.argsort(zv.detach())
    idx = idx[order]  # front to back
    u, v, zv = u[order], v[order], zv[order]
    f = 0.5 * (K[0, 0] + K[1, 1])
    s_px = (f * sigmas[idx] / zv).clamp(0.3, radius / 2.0)
    off = torch.arange(-radius, radius + 1, device=dev, dtype=dt)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    cu, cv = torch.floor(u.detach()), torch.floor(v.detach())  # pixel containing the projected centre
    px = cu[:, None] + ox[None]
    py = cv[:, None] + oy[None]
    d2 = (px + 0.5 - u[:, None]) ** 2 + (py + 0.5 - v[:, None]) ** 2  # distance to the pixel centres
    alpha = opacities[idx, None] * torch.exp(-0.5 * d2 / s_px[:, None] ** 2)
    ok = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (alpha.detach() >= 1.0 / 255)
    gi, fi = ok.nonzero(as_tuple=True)  # gaussian-major order = depth order
    pix = (py[gi, fi] * width + px[gi, fi]).long()
    a = alpha[gi, fi].clamp(max=0.99)
    perm = torch.sort(pix, stable=True).indices
    pix, a, gi = pix[perm], a[perm], gi[perm]
    bg = torch.zeros(3, device=dev, dtype=dt) if background is None else background.to(dev, dt)
    n_pix = height * width
    if pix.numel() == 0:
        img = bg[:, None].expand(3, n_pix).reshape(3, height, width).clone()
        if return_depth:
            zero = torch.zeros(height, width, device=dev, dtype=dt)
            return img, zero, zero
        return img
    log1m = torch.log1p(-a).double()
    incl = torch.cumsum(log1m, 0)
    _, counts = torch.unique_consecutive(pix, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    start_of = torch.repeat_interleave(starts, counts)
    excl = incl - log1m - (incl[start_of] - log1m[start_of])
    w = a * torch.exp(excl).to(dt)
    col = colors[idx][gi]
    img = torch.zeros(n_pix, 3, device=dev, dtype=dt).index_add(0, pix, w[:, None] * col)
    acc = torch.zeros(n_pix, device=dev, dtype=dt).index_add(0, pix, w)
    img = img + (1 - acc)[:, None] * bg[None]
    img = img.T.reshape(3, height, width)
    if return_depth:
        dsum = torch.zeros(n_pix, device=dev, dtype=dt).index_add(0, pix, w * zv[gi])
        depth = torch.where(acc > 1e-6, dsum / acc.clamp_min(1e-6), torch.zeros_like(acc))
        return img, depth.reshape(height, width), acc.reshape(height, width)
    return img


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


class GaussianField:
    """Isotropic 3D Gaussians: ``render(camera)``, ``fit(frames, cameras)``, point / PLY / mesh export.

    Attributes (torch parameters, float32 on ``device``):
        means (N,3) world; log_sigmas (N,) log world std; color_logits (N,3); opacity_logits (N,).
        background: (3,) render background in [0,1].
    """

    def __init__(self, means: Tensor, sigmas: Tensor, colors: Tensor, opacities: Tensor, *,
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), radius: int = 2,
                 device: str | torch.device = "cpu") -> None:
        n = means.shape[0]
        if means.ndim != 2 or means.shape[1] != 3 or n == 0:
            raise ValueError(f"means must be non-empty (N,3); got {tuple(means.shape)}")
        if sigmas.shape != (n,) or colors.shape != (n, 3) or opacities.shape != (n,):
            raise ValueError("sigmas (N,), colors (N,3), opacities (N,) must match means (N,3)")
        if radius < 1:
            raise ValueError(f"radius must be >= 1; got {radius}")
        self.device = torch.device(device)
        self.means = means.detach().float().to(self.device).clone().requires_grad_(True)
        self.log_sigmas = torch.log(sigmas.detach().float().clamp_min(1e-8)).to(self.device).requires_grad_(True)
        self.color_logits = _logit(colors.detach().float()).to(self.device).requires_grad_(True)
        self.opacity_logits = _logit(opacities.detach().float()).to(self.device).requires_grad_(True)
        self.background = torch.tensor(background, dtype=torch.float32, device=self.device)
        self.radius = int(radius)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_points(cls, xyz: Any, rgb: Any, *, opacity: float = 0.95, sigma_scale: float = 0.9, k: int = 4,
                    max_points: int | None = 40000, **kw: Any) -> GaussianField:
        """Initialise one Gaussian per point: colour = point colour, sigma = ``sigma_scale`` x the mean
        distance to the ``k`` nearest neighbours, opacity ``opacity``. Clouds larger than
        ``max_points`` are first voxel-down-sampled (voxel grown by 1.2x until they fit), which keeps
        the surfaces covered (unlike random sub-sampling)."""
        P = to_tensor(xyz)
        C = to_tensor(rgb, device=P.device)
        if P.dim() != 2 or P.shape[1] != 3 or P.shape[0] < 2 or C.shape != P.shape:
            raise ValueError(f"xyz and rgb must be (N,3) with N >= 2; got {tuple(P.shape)} and {tuple(C.shape)}")
        if max_points is not None and P.shape[0] > max_points:
            d1, _ = knn_points(P, P, 2)
            vox = float(median(d1[:, 1])) * 1.2
            P0, C0 = P, C
            while P.shape[0] > max_points:
                P, C = voxel_down_sample(P0, vox, C0)
                vox *= 1.2
        kk = min(k, P.shape[0] - 1)
        d, _ = knn_points(P, P, kk + 1)
        sig = (d[:, 1:].mean(1) * sigma_scale).clamp_min(1e-6)
        return cls(P, sig, C.clamp(0, 1), torch.full((P.shape[0],), float(opacity)), **kw)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def parameters(self) -> list[Tensor]:
        return [self.means, self.log_sigmas, self.color_logits, self.opacity_logits]

    # ------------------------------------------------------------------ rendering
    @staticmethod
    def _camera(camera: Any, index: int) -> tuple[Tensor, Tensor, int, int]:
        cams = camera if isinstance(camera, CameraArrays) else camera_arrays(camera, name="camera")
        if not -len(cams) <= index < len(cams):
            raise IndexError(f"index {index} out of range for {len(cams)} cameras")
        return cams.w2c[index], cams.K[index], cams.height, cams.width

    def _render(self, w2c: Tensor, K: Tensor, H: int, W: int, return_depth: bool = False) -> Any:
        return rasterize_gaussians(self.means, torch.exp(self.log_sigmas), torch.sigmoid(self.color_logits),
                                   torch.sigmoid(self.opacity_logits), w2c, K, H, W, radius=self.radius,
                                   background=self.background, return_depth=return_depth)

    def render(self, camera: Any, index: int = 0, *, return_depth: bool = False) -> Any:
        """Render camera ``index`` of ``camera`` (CameraTrajectory-like, K for its height x width).

        Returns:
            (3,H,W) float32 image in [0,1] (detached), or (image, depth (H,W), alpha (H,W)) with
            ``return_depth``.
        """
        w2c, K, H, W = self._camera(camera, index)
        with torch.no_grad():
            out = self._render(w2c, K, H, W, return_depth)
        if return_depth:
            return out[0].clamp(0, 1), out[1], out[2]
        return out.clamp(0, 1)

    # ------------------------------------------------------------------ optimisation
    def fit(self, frames: Tensor, cameras: Any, *, iterations: int = 300, lr_means: float | None = None,
            lr_color: float = 0.02, lr_opacity: float = 0.03, lr_sigma: float = 0.01, seed: int = 0,
            progress: bool = True) -> list[float]:
        """Optimise the Gaussians on posed frames (L1 photometric loss, Adam, one random view per step).

        Args:
            frames: (T,3,H,W) in [0,1]. cameras: T cameras (K rescaled to the frames when needed).
            iterations: optimisation steps. lr_means: default 1e-4 x the bounding-box diagonal of the
                centres; lr_color / lr_opacity / lr_sigma: Adam rates of the logits / log-sigma.

        Returns:
            per-iteration losses.
        """
        from tqdm.auto import tqdm

        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T,3,H,W); got {tuple(frames.shape)}")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0; got {iterations}")
        T, _, H, W = frames.shape
        cams = camera_arrays(cameras, num_frames=T, height=H, width=W, name="cameras")
        target = frames.detach().float().to(self.device)
        if lr_means is None:
            with torch.no_grad():
                ext = (self.means.max(0).values - self.means.min(0).values).norm().item()
            lr_means = 1e-4 * max(ext, 1e-6)
        opt = torch.optim.Adam([
            {"params": [self.means], "lr": lr_means},
            {"params": [self.color_logits], "lr": lr_color},
            {"params": [self.opacity_logits], "lr": lr_opacity},
            {"params": [self.log_sigmas], "lr": lr_sigma},
        ])
        gen = torch.Generator().manual_seed(seed)
        mats = [(cams.w2c[t], cams.K[t]) for t in range(T)]
        losses: list[float] = []
        bar = tqdm(range(iterations), desc="neural field", disable=not progress)
        for it in bar:
            t = int(torch.randint(T, (1,), generator=gen))
            img = self._render(mats[t][0], mats[t][1], H, W)
            loss = (img - target[t]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if it % 25 == 0:
                bar.set_postfix(l1=f"{losses[-1]:.4f}")
        return losses

    # ------------------------------------------------------------------ export
    def points(self) -> tuple[Tensor, Tensor]:
        """(centres (N,3), colours (N,3) in [0,1]) of the Gaussians with opacity > 0.05 (float32,
        detached, on the field's device)."""
        with torch.no_grad():
            keep = torch.sigmoid(self.opacity_logits) > 0.05
            return self.means[keep].detach().clone(), torch.sigmoid(self.color_logits[keep])

    def save_ply(self, path: str | os.PathLike[str]) -> Path:
        """Write the Gaussians in the standard 3DGS PLY layout (isotropic: scale_0..2 equal)."""
        with torch.no_grad():
            return write_gaussians_ply(path, self.means.cpu(), torch.sigmoid(self.color_logits).cpu(),
                                       torch.sigmoid(self.opacity_logits).cpu(), torch.exp(self.log_sigmas).cpu())

    def to_mesh(self, cameras: Any, *, voxel_size: float | None = None, min_alpha: float = 0.5) -> Any:
        """Extract a mesh: render depth from every camera of ``cameras`` and run TSDF fusion +
        marching cubes on it. Returns a ``trimesh.Trimesh``."""
        cams = camera_arrays(cameras, name="cameras", device=self.device)
        imgs, deps = [], []
        for t in range(len(cams)):
            img, dep, acc = self.render(cams, t, return_depth=True)
            imgs.append(img)
            deps.append(torch.where(acc >= min_alpha, dep, torch.zeros_like(dep)))
        xyz, _ = self.points()
        lo, hi = xyz.min(0).values.double(), xyz.max(0).values.double()
        if voxel_size is None:
            voxel_size = float(torch.linalg.vector_norm(hi - lo)) / 200
        margin = 4 * voxel_size
        vol = tsdf_fusion(torch.stack(imgs), torch.stack(deps), cams, voxel_size=voxel_size,
                          bounds=(lo - margin, hi + margin), surface_points=xyz)
        return mesh_from_tsdf(vol)
