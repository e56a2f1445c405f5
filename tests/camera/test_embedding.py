"""Analytic properties of the camera conditioning functions and the index/size rules
(bit-exactness against the reference is covered by tests/conformance)."""

import pytest
import torch

from worldstereo.camera import (
    CameraTrajectory,
    assign_scale,
    camera_center_normalization,
    camera_qt_tokens,
    plucker_embedding,
    sample_align_nframe,
    trajectory_subsample_linspace,
    unified_camera_normalization,
)


def test_plucker_identity_camera_matches_pinhole_rays():
    H, W, f = 6, 8, 10.0
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])[None]
    w2c = torch.eye(4)[None]
    emb = plucker_embedding(K, w2c, H, W, normalize=False)
    assert emb.shape == (1, 6, 1, H, W)
    r, c = 2, 5
    ray = torch.tensor([(c - 0.5 - W / 2) / f, (r + 0.5 - H / 2) / f, 1.0])
    torch.testing.assert_close(emb[0, :3, 0, r, c], ray / ray.norm())
    assert emb[0, 3:].abs().max() == 0  # camera at the origin: zero moment


def test_plucker_properties_on_a_preset():
    t = CameraTrajectory.orbit(azimuth_deg=30, num_frames=4, depth=2.0, height=16, width=24)
    emb = plucker_embedding(t.K, t.w2c, 16, 24, normalize=False)[0]
    d, m = emb[:3], emb[3:]
    torch.testing.assert_close(d.norm(dim=0), torch.ones(4, 16, 24))
    assert (d * m).sum(0).abs().max() < 1e-5  # moment orthogonal to direction
    # the orbit target lies on every centre ray: moment of the centre pixel ray = target x d
    torch.testing.assert_close(m[:, :, 8, 12].T, torch.cross(t.centers, d[:, :, 8, 12].T, dim=-1), atol=1e-6, rtol=0)
    bad = t.w2c.clone()
    bad[1, 0, 3] = float("nan")
    assert (plucker_embedding(t.K, bad, 16, 24, normalize=False) == 0).all()


def test_center_normalization_first_camera_identity_and_scale():
    t = CameraTrajectory.eloop(radius_x=0.5, radius_y=0.5, num_frames=9, depth=3.0)
    w2c = t.w2c.clone()
    w2c[:, :3, 3] += torch.tensor([1.0, 2.0, 3.0])  # arbitrary world frame
    out = camera_center_normalization(w2c, 9, camera_scale=2.0, is_w2c=True)
    torch.testing.assert_close(out[0, :3, :3], torch.eye(3), atol=1e-5, rtol=0)
    c2w = torch.inverse(out)
    assert abs(float(c2w[0, :3, 3].norm()) - 2.0) < 1e-4
    torch.testing.assert_close(c2w[:, :3, 3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_camera_tokens_shapes_and_identity():
    t = CameraTrajectory.orbit(num_frames=5)
    qt, qt_ref = camera_qt_tokens(t.w2c, t.w2c[0:1])
    assert qt.shape == (1, 5, 7) and qt_ref.shape == (1, 1, 7)
    torch.testing.assert_close(qt[0, 0, :4], torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(qt_ref[0, 0], qt[0, 0])
    assert (qt[0, :, 0] >= 0).all()
    tgt, ref = unified_camera_normalization(t.w2c, t.w2c[2:4])
    torch.testing.assert_close(ref, tgt[2:4])
    with pytest.raises(ValueError, match="w2c_ref"):
        unified_camera_normalization(t.w2c, torch.eye(3))
    with pytest.raises(ValueError, match="nframe"):
        camera_center_normalization(t.w2c, 3)
    with pytest.raises(ValueError, match="K"):
        plucker_embedding(torch.eye(3).repeat(2, 1, 1), t.w2c, 4, 4)


def test_keyframe_rules():
    assert trajectory_subsample_linspace(81, 21) == list(range(0, 81, 4))
    assert trajectory_subsample_linspace(10, 4) == [0, 3, 6, 9]
    assert sample_align_nframe(21, 8) == [3, 6, 9, 12, 14, 16, 18, 20]
    for N in (5, 13, 21, 40):
        for n in range(1, N):
            idx = sample_align_nframe(N, n)
            gaps = [b - a for a, b in zip([0] + idx, idx)]
            assert len(idx) == n and idx[-1] == N - 1 and 0 not in idx
            assert gaps == sorted(gaps, reverse=True) and max(gaps) - min(gaps) <= 1
    with pytest.raises(ValueError, match="n"):
        sample_align_nframe(5, 5)
    with pytest.raises(ValueError, match="nframe"):
        trajectory_subsample_linspace(5, 0)


def test_assign_scale():
    assert assign_scale(480, 832) == (480, 768)
    assert assign_scale(1000, 1000) == (608, 608)
    assert assign_scale(100, 100, [[480, 832], [512, 512]]) == (512, 512)
    assert assign_scale(100, 100, [[200, 200], [300, 300]]) == (200, 200)  # first on ties
    with pytest.raises(ValueError, match="scale_map"):
        assign_scale(100, 100, [])
    with pytest.raises(ValueError, match="height"):
        assign_scale(0, 100)
