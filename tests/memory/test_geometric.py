"""GlobalGeometricMemory on an analytic scene: a fronto-parallel plane at depth 2."""

import pytest
import torch

from worldstereo.geometry import PointCloud
from worldstereo.memory import GlobalGeometricMemory

S = 32
K = torch.tensor([[32.0, 0, 16.0], [0, 32.0, 16.0], [0, 0, 1]], dtype=torch.float64)
PLANE_Z = 2.0


def _w2c_at(x):
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[0, 3] = -x  # camera centre at (x, 0, 0), looking along +z
    return w2c


def _image(seed=0):
    return torch.rand(3, S, S, generator=torch.Generator().manual_seed(seed))


def _memory(**kw):
    mem = GlobalGeometricMemory(**kw)
    return mem.initialize(_image(), torch.full((S, S), PLANE_Z), K, torch.eye(4))


def test_initialize_lifts_the_plane():
    mem = _memory()
    assert len(mem) == S * S
    assert torch.allclose(mem.points.xyz[:, 2], torch.full((S * S,), PLANE_Z), atol=1e-5)
    assert mem.points.xyz[:, 0].max().item() == pytest.approx((S - 0.5 - 16) / 32 * PLANE_Z, abs=1e-5)


def test_render_frame0_is_condition_image_with_zero_mask():
    mem = _memory()
    traj = torch.stack([_w2c_at(0.0), _w2c_at(0.0), _w2c_at(1.0)])
    out = mem.render(traj, K, S, S)
    assert out.video.shape == (3, 3, S, S) and out.hole_mask.shape == (3, 1, S, S)
    assert torch.equal(out.video[0], _image())
    assert out.hole_mask[0].sum() == 0
    # frame 1 sees the whole plane; frame 2 is shifted by half the plane width: the right part is a hole
    assert out.hole_mask[1].mean() < 0.05
    assert 0.3 < out.hole_mask[2].mean() < 0.7
    assert out.hole_mask[2, 0, :, -4:].min() == 1 and out.hole_mask[2, 0, :, :4].max() == 0
    covered = out.hole_mask[1, 0] == 0
    assert torch.allclose(out.depth[1, 0][covered], torch.full_like(out.depth[1, 0][covered], PLANE_Z), atol=1e-3)
    other = torch.zeros(3, S // 2, S // 2)
    out = mem.render(traj, K, S, S, condition_image=other)
    assert torch.equal(out.video[0], torch.zeros(3, S, S))


def test_update_recovers_known_scale_factor():
    mem = _memory()
    n0 = len(mem)
    w2c = _w2c_at(0.5)[None]
    # the new frame's depth estimate is the true depth divided by 1.7
    added = mem.update(_image(1)[None], w2c, K, depths=torch.full((1, S, S), PLANE_Z / 1.7))
    assert mem.last_update_scales[0] == pytest.approx(1.7, rel=1e-4)
    assert added > 0 and len(mem) == n0 + added
    assert torch.allclose(mem.points.xyz[:, 2], torch.full((len(mem),), PLANE_Z), atol=1e-3)
    # the new points extend the plane to the right, where the first view saw nothing
    assert mem.points.xyz[:, 0].max() > 1.3


def test_update_with_depth_estimator():
    class Est:
        def __call__(self, image):
            return type("P", (), {"depth": torch.full((S, S), 1.0), "valid_mask": torch.ones(S, S, dtype=torch.bool)})()

    mem = _memory()
    mem.update(_image(1)[None], _w2c_at(0.5)[None], K, depth_estimator=Est())
    assert mem.last_update_scales[0] == pytest.approx(PLANE_Z, rel=1e-4)


def test_max_points_holds_after_updates():
    mem = _memory(max_points=1500)
    for k in range(1, 6):
        mem.update(_image(k)[None], _w2c_at(0.4 * k)[None], K, depths=torch.full((1, S, S), PLANE_Z))
        assert 0 < len(mem) <= 1500
    assert len(mem) >= 1200  # capped by a fine voxel grid, not emptied
    assert torch.allclose(mem.points.xyz[:, 2], torch.full((len(mem),), PLANE_Z), atol=1e-3)
    assert mem.points.xyz[:, 0].max() > 2.0  # the memory grew along the camera path


def test_from_point_cloud_caps():
    pts = torch.rand(5000, 6, generator=torch.Generator().manual_seed(0))
    mem = GlobalGeometricMemory(max_points=1000).from_point_cloud(pts)
    assert 800 <= len(mem) <= 1000
    assert isinstance(mem.points, PointCloud)


def test_update_frequency_semantics():
    frames = torch.stack([_image(i) for i in range(5)])
    w2c = torch.stack([_w2c_at(0.3 * i) for i in range(5)])
    depths = torch.full((5, S, S), PLANE_Z)
    never = _memory(update_frequency="never")
    assert never.update(frames, w2c, K, depths=depths) == 0 and len(never) == S * S
    assert never.maybe_update(frames, w2c, K, depths=depths) == 0
    manual = _memory(update_frequency="manual")
    assert manual.maybe_update(frames, w2c, K, depths=depths) == 0 and len(manual) == S * S
    assert manual.update(frames, w2c, K, depths=depths) > 0
    auto = _memory(update_frequency="auto", keyframes_per_update=2)
    assert auto.maybe_update(frames, w2c, K, depths=depths) > 0
    assert len(auto.last_update_scales) == 2  # frames 2 and 4: never frame 0


def test_input_errors():
    with pytest.raises(ValueError, match="update_frequency"):
        GlobalGeometricMemory(update_frequency="sometimes")
    with pytest.raises(ValueError, match="max_points"):
        GlobalGeometricMemory(max_points=0)
    mem = _memory()
    with pytest.raises(ValueError, match="depth_estimator/depths"):
        mem.update(_image()[None], torch.eye(4)[None], K)
    with pytest.raises(ValueError, match="w2c"):
        mem.update(_image()[None], torch.eye(4).expand(2, 4, 4), K, depths=torch.ones(1, S, S))
