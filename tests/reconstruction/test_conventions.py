"""The reconstruction package has no geometry of its own: it lifts, projects, z-buffers and samples with
``worldstereo.geometry`` (pixel (row r, column c) has its centre at image coordinates (c + 0.5, r + 0.5),
a point projecting to (u, v) lies in pixel (floor(v), floor(u)), and cx = W/2 is the image centre).

Truth comes from outside the package: hand-computed projections and the library's procedural room
scene (an exact ray caster with its own pixel-centre rays).
"""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import worldstereo.reconstruction as rec_pkg
from worldstereo.geometry.lifting import unproject_depth
from worldstereo.geometry.projection import project_points, zbuffer
from worldstereo.geometry.sampling import sample_bilinear

from ._scene import look_at_w2c

scenes = pytest.importorskip("worldstereo.scenes")


def test_optical_axis_goes_through_the_image_centre():
    # cx = W/2, cy = H/2: the point straight ahead projects onto the corner shared by the 4 centre pixels
    K = torch.tensor([[30.0, 0, 8.0], [0, 30.0, 6.0], [0, 0, 1]], dtype=torch.float64)
    u, v, _ = project_points(torch.tensor([[0.0, 0.0, 2.0]]), torch.eye(4), K)
    assert (float(u[0, 0]), float(v[0, 0])) == (8.0, 6.0)
    # and a point just right/below of the axis lands in pixel (row 6, column 8)
    zb = zbuffer(torch.tensor([[1e-3, 1e-3, 2.0]]), torch.eye(4), K, 12, 16)
    assert zb.index[0, 6, 8] == 0 and int(zb.hit.sum()) == 1
    # the centre of pixel (row 6, column 8) lifts onto a ray slightly right of / below the axis
    pts = unproject_depth(torch.full((12, 16), 2.0, dtype=torch.float64), K, torch.eye(4, dtype=torch.float64))
    np.testing.assert_allclose(pts[6 * 16 + 8].numpy(), [0.5 / 30 * 2, 0.5 / 30 * 2, 2.0], atol=1e-12)


@pytest.fixture(scope="module")
def room_views():
    scene = scenes.make_room_scene(1)
    H, W = 36, 48
    f = 40.0
    K = np.array([[f, 0, W / 2], [0, f * 1.05, H / 2], [0, 0, 1.0]])
    target = np.array([0.2, 0.3, 3.5])
    w2c = np.stack([look_at_w2c(np.array([x, -0.2, 0.1]), target) for x in (-0.5, 0.4)])
    views = [scene.render(torch.from_numpy(w2c[i]), torch.from_numpy(K), H, W) for i in range(2)]
    depth = torch.stack([d for _, d in views])  # float32, as the reconstruction uses it
    return torch.from_numpy(K), torch.from_numpy(w2c), depth, H, W


def test_room_scene_points_reproject_into_their_own_pixels(room_views):
    K, w2c, depth, H, W = room_views
    pts = unproject_depth(depth[0], K, w2c[0])  # float32 like the reconstruction
    zb = zbuffer(pts, w2c[0], K, H, W)
    np.testing.assert_array_equal(zb.index[0].reshape(-1).numpy(), np.arange(H * W))
    np.testing.assert_allclose(zb.depth[0].numpy(), depth[0].numpy(), rtol=1e-5)
    # sub-pixel: each point projects onto its pixel's centre
    idx = np.arange(H * W)
    np.testing.assert_allclose(zb.u[0].numpy(), idx % W + 0.5, atol=1e-3)
    np.testing.assert_allclose(zb.v[0].numpy(), idx // W + 0.5, atol=1e-3)


def test_room_scene_cross_view_depth_agrees_with_the_renderer(room_views):
    """Points lifted from view 0, projected into view 1: the renderer's inverse depth of view 1, sampled
    bilinearly at the projections (pixel centres at +0.5), equals 1/z there. Inverse depth is affine in
    (u, v) on a plane, so the sample is exact away from edges and curved surfaces; a half-pixel
    convention mismatch anywhere in lift / project / sample breaks that."""
    K, w2c, depth, _, _ = room_views
    d64 = depth.double()
    pts = unproject_depth(d64[0], K, w2c[0])
    u, v, z = project_points(pts, w2c[1], K)
    inv, ok = sample_bilinear((1.0 / d64[1])[None, None], u, v)
    ok = ok[0]
    assert ok.float().mean() > 0.6
    err = (inv[0, 0][ok] * z[0][ok] - 1.0).abs()
    assert float(err.median()) < 1e-5, float(err.median())
    # the same comparison under the other convention (pixel centres at integers) is far off
    shifted, _ = sample_bilinear((1.0 / d64[1])[None, None], u - 0.5, v - 0.5)
    assert float((shifted[0, 0][ok] * z[0][ok] - 1.0).abs().median()) > 1e-3


def test_no_projection_or_zbuffer_code_of_its_own():
    """The package imports its geometry: no module defines a projection, lifting, z-buffer or bilinear
    sampler, and none calls NumPy's scatter-min (the old z-buffer) or offsets / divides pixel coordinates
    by intrinsics (hand-written (un)projection)."""
    pkg = Path(rec_pkg.__file__).parent
    names = ("project", "unproject", "zbuffer", "zbuffer_splat", "bilinear", "_bilinear", "atomic_path", "as_numpy")
    for path in pkg.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & set(names), (path.name, defined & set(names))
        assert "minimum.at" not in src and not re.search(r"[-/]\s*K\[", src), path.name
