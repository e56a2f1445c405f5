"""Self-contained static HTML viewer for a reconstruction (no server, no CDN, no WebGL needed).

The page embeds the (sub-sampled) points and colours as base64 float32/uint8 arrays and the camera
frusta, and draws them with the canvas 2D API (painter's algorithm, far to near). Drag to orbit,
wheel to zoom. For meshes the vertices are shown as points.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldstereo.geometry.lifting import unproject_points
from worldstereo.io.atomic import atomic_write
from worldstereo.io.paths import as_path, ensure_folder

from ._common import camera_arrays, to_numpy

__all__ = ["viewer_html", "write_viewer"]

_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>html,body{margin:0;height:100%;background:#1e1e24;overflow:hidden;font:12px sans-serif;color:#ddd}
#c{width:100%;height:100%;display:block}#info{position:absolute;left:8px;top:6px}</style></head>
<body><canvas id="c"></canvas><div id="info">__TITLE__ &mdash; drag: orbit, wheel: zoom</div>
<script>
"use strict";
const DATA = __DATA__;
function b64(s, T) { const b = atob(s); const u = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return new T(u.buffer); }
const P = b64(DATA.xyz, Float32Array), C = b64(DATA.rgb, Uint8Array), N = P.length / 3;
const cv = document.getElementById("c"), ctx = cv.getContext("2d");
let yaw = 0.6, pitch = 0.35, dist = DATA.radius * 2.6;
const ctr = DATA.center;
function resize() { cv.width = window.innerWidth || 800; cv.height = window.innerHeight || 600; draw(); }
function view(p) {  // world -> camera of the orbit viewer (y down on screen)
  const x = p[0] - ctr[0], y = p[1] - ctr[1], z = p[2] - ctr[2];
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const x1 = cy * x - sy * z, z1 = sy * x + cy * z;
  const y2 = cp * y - sp * z1, z2 = sp * y + cp * z1;
  return [x1, y2, z2 + dist];
}
function draw() {
  const W = cv.width, H = cv.height, f = 0.9 * Math.min(W, H);
  ctx.fillStyle = "#1e1e24"; ctx.fillRect(0, 0, W, H);
  const order = new Array(N), zs = new Float32Array(N), us = new Float32Array(N), vs = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const q = view([P[3 * i], P[3 * i + 1], P[3 * i + 2]]);
    zs[i] = q[2]; us[i] = W / 2 + f * q[0] / q[2]; vs[i] = H / 2 + f * q[1] / q[2]; order[i] = i;
  }
  order.sort((a, b) => zs[b] - zs[a]);
  const s = Math.max(1.5, DATA.point_size * f / dist);
  for (const i of order) {
    if (zs[i] <= 1e-3) continue;
    ctx.fillStyle = "rgb(" + C[3 * i] + "," + C[3 * i + 1] + "," + C[3 * i + 2] + ")";
    ctx.fillRect(us[i] - s / 2, vs[i] - s / 2, s, s);
  }
  ctx.strokeStyle = "#ff5050"; ctx.lineWidth = 1.5;
  for (const fr of DATA.frusta) {
    const pts = fr.map(view);
    if (pts.some(q => q[2] <= 1e-3)) continue;
    const uv = pts.map(q => [W / 2 + f * q[0] / q[2], H / 2 + f * q[1] / q[2]]);
    ctx.beginPath();
    for (let k = 1; k < 5; k++) { ctx.moveTo(uv[0][0], uv[0][1]); ctx.lineTo(uv[k][0], uv[k][1]); }
    ctx.moveTo(uv[1][0], uv[1][1]);
    for (const k of [2, 3, 4, 1]) ctx.lineTo(uv[k][0], uv[k][1]);
    ctx.stroke();
  }
}
let drag = null;
cv.addEventListener("mousedown", e => { drag = [e.clientX, e.clientY]; });
window.addEventListener("mouseup", () => { drag = null; });
window.addEventListener("mousemove", e => { if (!drag) return;
  yaw += (e.clientX - drag[0]) * 0.01; pitch += (e.clientY - drag[1]) * 0.01; drag = [e.clientX, e.clientY]; draw(); });
cv.addEventListener("wheel", e => { e.preventDefault(); dist *= Math.exp(e.deltaY * 0.001); draw(); },
  {passive: false});
window.addEventListener("resize", resize);
resize();
</script></body></html>
"""


def viewer_html(points: Any, colors: Any, cameras: Any = None, *, title: str = "worldstereo reconstruction",
                max_points: int = 60000, seed: int = 0) -> str:
    """Build the viewer page.

    Args:
        points: (N,3) world points; colors: (N,3) in [0,1].
        cameras: optional CameraTrajectory-like; each camera is drawn as a frustum (apex + 4 image
            corners at 8 % of the scene radius).
        max_points: random sub-sample size embedded in the page.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ValueError(f"max_points: expected a positive integer, got {max_points!r}")
    P = to_numpy(points, np.float32)
    C = to_numpy(colors)
    if P.size and not np.isfinite(P).all():
        raise ValueError("points: contains NaN or infinite values")
    if P.ndim != 2 or P.shape[1] != 3 or P.shape[0] == 0 or C.shape != P.shape:
        raise ValueError(f"points and colors must be non-empty (N,3) arrays of equal shape; got {P.shape}, {C.shape}")
    if P.shape[0] > max_points:
        P = P[(sel := np.random.default_rng(seed).choice(P.shape[0], max_points, replace=False))]
        C = C[sel]
    center = np.median(P, axis=0)
    radius = float(np.percentile(np.linalg.norm(P - center, axis=1), 90)) or 1.0
    frusta: list = []
    if cameras is not None:
        cams = camera_arrays(cameras, name="cameras", device="cpu")
        # apex = camera centre, then the 4 image corners lifted to z-depth 8 % of the scene radius
        u = torch.tensor([0.0, cams.width, cams.width, 0.0], dtype=torch.float64)
        v = torch.tensor([0.0, 0.0, cams.height, cams.height], dtype=torch.float64)
        corners = unproject_points(u, v, torch.full((len(cams), 4), 0.08 * radius, dtype=torch.float64), cams.K,
                                   cams.w2c)
        frusta = torch.cat([cams.centers[:, None], corners], dim=1).numpy().round(5).tolist()
    data = {"xyz": base64.b64encode(np.ascontiguousarray(P, dtype="<f4").tobytes()).decode("ascii"),
            "rgb": base64.b64encode(np.clip(C * 255 + 0.5, 0, 255).astype(np.uint8).tobytes()).decode("ascii"),
            "center": center.astype(float).round(6).tolist(), "radius": radius,
            "point_size": float(2.5 * radius / np.sqrt(P.shape[0])), "frusta": frusta}
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _TEMPLATE.replace("__TITLE__", safe_title).replace("__DATA__", json.dumps(data))


def write_viewer(path: str | os.PathLike[str], rec: Any, *, max_points: int = 60000) -> Path:
    """Write the viewer page of a Reconstruction (points, or mesh vertices) to ``path`` atomically."""
    from .export import as_reconstruction  # lazy: import cycle with .export

    rec = as_reconstruction(rec)
    if getattr(rec, "mesh", None) is not None:
        pts = np.asarray(rec.mesh.vertices)
        cols = np.asarray(rec.mesh.visual.vertex_colors)[:, :3] / 255.0
    else:
        pts, cols = rec.points, rec.colors
    html = viewer_html(pts, cols, getattr(rec, "cameras", None), max_points=max_points,
                       title=f"worldstereo {getattr(rec, 'method', 'reconstruction')}")
    p = as_path(path, "path")
    ensure_folder(p.parent, "path")
    with atomic_write(p) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return p
