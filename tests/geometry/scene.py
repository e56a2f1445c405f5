"""Analytic test scene: two axis-aligned rectangles (a background wall and a foreground card) and a
sphere, with exact ray casting. World units; the scene sits in front of the origin along +z."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# (z, x_min, x_max, y_min, y_max, colour)
WALL = (6.0, -6.0, 6.0, -4.0, 4.0, (0.9, 0.1, 0.1))
CARD = (3.0, -0.6, 0.4, -0.5, 0.5, (0.1, 0.8, 0.2))
SPHERE_C = (1.3, 0.6, 4.5)
SPHERE_R = 0.6
SPHERE_COLOUR = (0.2, 0.3, 0.9)
COLOURS = torch.tensor([WALL[5], CARD[5], SPHERE_COLOUR])


def raycast(origin: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
    """Distance along ``dirs`` (not normalised: t in units of |dir|) to the first hit, and the id of
    the surface hit (0 wall, 1 card, 2 sphere, -1 none). origin (3,), dirs (...,3), float64."""
    o = origin.double()
    d = dirs.double()
    best = torch.full(d.shape[:-1], math.inf, dtype=torch.float64)
    ids = torch.full(d.shape[:-1], -1, dtype=torch.long)
    for sid, (z, x0, x1, y0, y1, _) in enumerate((WALL, CARD)):
        with torch.no_grad():
            t = (z - o[2]) / d[..., 2]
            p = o + t[..., None] * d
            hit = (t > 0) & (p[..., 0] >= x0) & (p[..., 0] <= x1) & (p[..., 1] >= y0) & (p[..., 1] <= y1)
            better = hit & (t < best)
            best = torch.where(better, t, best)
            ids = torch.where(better, torch.full_like(ids, sid), ids)
    c = torch.tensor(SPHERE_C, dtype=torch.float64)
    oc = o - c
    a = (d * d).sum(-1)
    b = 2 * (d * oc).sum(-1)
    cc = (oc * oc).sum() - SPHERE_R**2
    disc = b * b - 4 * a * cc
    t = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    hit = (disc > 0) & (t > 0)
    better = hit & (t < best)
    best = torch.where(better, t, best)
    ids = torch.where(better, torch.full_like(ids, 2), ids)
    return best, ids


def pixel_rays(K: Tensor, w2c: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Camera centre (3,) and world rays (H,W,3) with unit camera-z component (so t = z-depth)."""
    K = K.double()
    w2c = w2c.double()
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    cam = pix @ torch.inverse(K).t()
    R = w2c[:3, :3]
    centre = -R.t() @ w2c[:3, 3]
    return centre, cam @ R  # R^T applied to each ray


def depth_map(K: Tensor, w2c: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Analytic z-depth (inf where nothing is hit) and surface ids of a pinhole view."""
    centre, rays = pixel_rays(K, w2c, height, width)
    return raycast(centre, rays)
