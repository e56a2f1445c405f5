"""The reconstruction package shares the library's pixel convention: pixel (row r, column c) has its
centre at image coordinates (c + 0.5, r + 0.5), a point projecting to (u, v) lies in pixel
(floor(v), floor(u)), and cx = W/2 is the image centre.

Truth comes from outside the package: ``worldstereo.geometry.lifting.unproject_depth`` and the
library's procedural room scene (an exact ray caster with its own pixel-centre rays).
"""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from worldstereo.geometry.lifting import unproject_depth
from worldstereo.reconstruction._common import project, unproject, zbuffer_splat
from worldstereo.reconstruction.fusion import _bilinear

from ._scene import look_at_w2c

scenes = pytest.importorskip("worldstereo.scenes")


def _camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    K = np.array([[41.0, 0.7, 17.3], [0.0, 44.0, 12.6], [0.0, 0.0, 1.0]])
    w2c = np.eye(4)
    w2c[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.4).as_matrix()
    w2c[:3, 3] = rng.normal(size=3)
    return K, w2c


def test_unproject_matches_library_lifting():
    rng = np.random.default_rng(3)
    K, w2c = _camera(rng)
    depth = rng.uniform(0.5, 4.0, size=(23, 31))
    lib = unproject_depth(torch.from_numpy(depth), torch.from_numpy(K), torch.from_numpy(w2c)).numpy()
    pts, idx = unproject(depth, K, w2c)
    np.testing.assert_array_equal(idx, np.arange(depth.size))
    np.testing.assert_allclose(pts, lib, rtol=0, atol=1e-12)
    # with invalid pixels and a mask: the same points, restricted to the kept pixels
    depth[2, 5] = 0.0
    depth[7, 9] = np.nan
    mask = rng.uniform(size=depth.shape) > 0.3
    pts, idx = unproject(depth, K, w2c, mask)
    keep = (mask & np.isfinite(depth) & (depth > 0)).ravel()
    np.testing.assert_array_equal(idx, np.flatnonzero(keep))
    np.testing.assert_allclose(pts, lib[keep], rtol=0, atol=1e-12)


def test_optical_axis_goes_through_the_image_centre():
    # cx = W/2, cy = H/2: the point straight ahead projects onto the corner shared by the 4 centre pixels
    K = np.array([[30.0, 0, 8.0], [0, 30.0, 6.0], [0, 0, 1]])
    u, v, _ = project(np.array([[0.0, 0.0, 2.0]]), K, np.eye(4))
    assert (u[0], v[0]) == (8.0, 6.0)
    # and a point just right/below of the axis lands in pixel (row 6, column 8)
    _, owner = zbuffer_splat(np.array([[1e-3, 1e-3, 2.0]]), K, np.eye(4), 12, 16)
    assert owner[6, 8] == 0 and (owner >= 0).sum() == 1
    # the centre of pixel (row 6, column 8) lifts onto a ray slightly right of / below the axis
    pts, _ = unproject(np.full((12, 16), 2.0), K, np.eye(4))
    np.testing.assert_allclose(pts[6 * 16 + 8], [0.5 / 30 * 2, 0.5 / 30 * 2, 2.0], atol=1e-12)


@pytest.fixture(scope="module")
def room_views():
    scene = scenes.make_room_scene(1)
    H, W = 36, 48
    f = 40.0
    K = np.array([[f, 0, W / 2], [0, f * 1.05, H / 2], [0, 0, 1.0]])
    target = np.array([0.2, 0.3, 3.5])
    w2c = np.stack([look_at_w2c(np.array([x, -0.2, 0.1]), target) for x in (-0.5, 0.4)])
    views = [scene.render(torch.from_numpy(w2c[i]), torch.from_numpy(K), H, W) for i in range(2)]
    depth = np.stack([d.double().numpy() for _, d in views])
    return K, w2c, depth, H, W


def test_room_scene_points_reproject_into_their_own_pixels(room_views):
    K, w2c, depth, H, W = room_views
    pts, idx = unproject(depth[0], K, w2c[0])
    assert idx.size == H * W  # the room is closed: every pixel has a depth
    zbuf, owner = zbuffer_splat(pts, K, w2c[0], H, W)
    np.testing.assert_array_equal(owner.ravel()[idx], np.arange(idx.size))
    np.testing.assert_allclose(zbuf, depth[0], rtol=1e-9)
    # sub-pixel: each point projects onto its pixel's centre
    u, v, _ = project(pts, K, w2c[0])
    np.testing.assert_allclose(u, idx % W + 0.5, atol=1e-6)
    np.testing.assert_allclose(v, idx // W + 0.5, atol=1e-6)


def test_room_scene_cross_view_depth_agrees_with_the_renderer(room_views):
    """Points lifted from view 0, projected into view 1: the renderer's inverse depth of view 1, sampled
    bilinearly at the projections (pixel centres at +0.5), equals 1/z there. Inverse depth is affine in
    (u, v) on a plane, so the sample is exact away from edges and curved surfaces; a half-pixel
    convention mismatch anywhere in lift / project / sample breaks that."""
    K, w2c, depth, _, _ = room_views
    pts, _ = unproject(depth[0], K, w2c[0])
    u, v, z = project(pts, K, w2c[1])
    inv = _bilinear(1.0 / depth[1], u, v)
    ok = inv > 0
    assert ok.mean() > 0.6
    err = np.abs(inv[ok] * z[ok] - 1.0)
    assert np.median(err) < 1e-5, np.median(err)
    # the same comparison under the other convention (pixel centres at integers) is far off
    shifted = np.abs(_bilinear(1.0 / depth[1], u - 0.5, v - 0.5)[ok] * z[ok] - 1.0)
    assert np.median(shifted) > 1e-3
