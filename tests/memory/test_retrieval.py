"""Retrieval primitives against hand-computed geometry."""

import math

import numpy as np
import pytest
import torch

from worldstereo.memory.retrieval import (
    CameraSelector,
    aabb_iou,
    angle_penalty,
    build_reference_list,
    correspondence_scores,
    fov_overlap_scores,
    frustum_corners,
    grey_opencv_bgr2gray,
    image_quality_score,
    retrieve,
    shortcut_candidates,
    view_angle_deg,
)


def _box(lo, hi):
    lo, hi = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    return torch.stack([torch.where(torch.tensor([(i >> k) & 1 for k in range(3)]).bool(), hi, lo) for i in range(8)])


def _rot_y(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def _w2c(R_c2w, centre):
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = R_c2w
    c2w[:3, 3] = torch.as_tensor(centre, dtype=torch.float64)
    return torch.linalg.inv(c2w)


K2 = torch.tensor([[1.0, 0, 1.0], [0, 1.0, 1.0], [0, 0, 1]], dtype=torch.float64)  # 2x2 image, 90 deg fov


def test_aabb_iou_hand_computed():
    a = _box([0, 0, 0], [2, 2, 2])
    assert aabb_iou(a, _box([1, 0, 0], [3, 2, 2])).item() == pytest.approx(4 / 12, abs=1e-9)
    assert aabb_iou(a, _box([1, 1, 1], [3, 3, 3])).item() == pytest.approx(1 / 15, abs=1e-9)
    assert aabb_iou(a, a).item() == pytest.approx(1.0, abs=1e-8)
    assert aabb_iou(a, _box([2, 0, 0], [3, 1, 1])).item() == 0.0  # touching face
    assert aabb_iou(a, _box([5, 5, 5], [6, 6, 6])).item() == 0.0


def test_frustum_corners_analytic():
    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    pts = frustum_corners(_w2c(torch.eye(3, dtype=torch.float64), c), K2, 2, 2, near=0.1, far=10.0)[0]
    s = 1 / math.sqrt(3)
    dirs = torch.tensor([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=torch.float64) * s
    expected = torch.cat([dirs * 0.1, dirs * 10.0]) + c
    assert torch.allclose(pts, expected, atol=1e-12)


def test_frustum_overlap_of_shifted_camera():
    s = 1 / math.sqrt(3)
    a, z = 10 * s, 10 * s - 0.1 * s  # half width of the far face, z extent of the frustum box
    shift = 3.0
    w2c = torch.stack([_w2c(torch.eye(3, dtype=torch.float64), [0, 0, 0]),
                       _w2c(torch.eye(3, dtype=torch.float64), [shift, 0, 0])])
    sc = fov_overlap_scores(w2c[:1], K2, w2c, K2, (2, 2), (2, 2))
    vol = (2 * a) ** 2 * z
    inter = (2 * a - shift) * (2 * a) * z
    assert sc.overlap[0, 0].item() == pytest.approx(1.0, abs=1e-8)
    assert sc.overlap[0, 1].item() == pytest.approx(inter / (2 * vol - inter), rel=1e-9)
    assert torch.allclose(sc.angle_deg, torch.zeros(1, 2, dtype=torch.float64), atol=1e-5)


def test_angle_penalty_values():
    assert angle_penalty(0.0).item() == 1.0
    assert angle_penalty(90.0).item() == 1.0
    assert angle_penalty(126.0).item() == pytest.approx(math.exp(-1.0))
    assert angle_penalty(180.0).item() == pytest.approx(math.exp(-2.5))
    w2c = torch.stack([_w2c(_rot_y(d), [0, 0, 0]) for d in (0.0, 30.0, 135.0)])
    ang = view_angle_deg(w2c[:1], w2c)[0]
    assert torch.allclose(ang, torch.tensor([0.0, 30.0, 135.0], dtype=torch.float64), atol=1e-5)
    sc = fov_overlap_scores(w2c[:1], K2, w2c, K2, (2, 2), (2, 2))
    assert sc.score[0, 2].item() == pytest.approx(sc.overlap[0, 2].item() * math.exp(5 * (90 - 135) / 180))
    assert sc.score[0, 1].item() == sc.overlap[0, 1].item()


def test_build_reference_list_hand_example():
    ref_index, ref_bank, table = build_reference_list([5, 7, 7, 5, 2], [0.5, 0.4, 0.3, 0.2, 0.1], [1, 2, 3, 4, 5])
    assert ref_index == [0, 1, 4]
    assert ref_bank == [5, 7, 2]
    assert sorted(table) == [0, 1, 4]
    assert sorted(table[0]) == [1, 4] and sorted(table[1]) == [2, 3] and sorted(table[4]) == [5]
    assert table[1][3] == {"score": 0.3, "angle_diff": 3.0}


def test_shortcut_candidates_rules():
    names = [f"view1/traj2/{i:04d}" for i in range(8)] + [f"wonder0/traj0/{i:04d}" for i in range(8)]
    assert shortcut_candidates(names, "view1", "traj0") == ([3, 5, 7], "regular")
    assert shortcut_candidates(names, "view1", "traj1") == ([3], "regular")
    assert shortcut_candidates(names, "wonder0", "traj1") == ([11, 13, 15], "aerial")
    assert shortcut_candidates(names, "wonder0", "traj0") == ([], None)
    assert shortcut_candidates(names, "renders", "traj_eloop") == ([], None)


def _ring(n, radius=2.0):
    """Cameras on a circle in the xz-plane, all looking at the origin."""
    out = []
    for k in range(n):
        a = 2 * math.pi * k / n
        centre = [radius * math.sin(a), 0.0, -radius * math.cos(a)]
        out.append(_w2c(_rot_y(-math.degrees(a)), centre))
    return torch.stack(out)


def _arc(n, span_deg=120.0, radius=2.0):
    """Cameras on a circular arc in the xz-plane, all looking at the origin."""
    out = []
    for k in range(n):
        a = math.radians(span_deg * k / (n - 1))
        out.append(_w2c(_rot_y(-math.degrees(a)), [radius * math.sin(a), 0.0, -radius * math.cos(a)]))
    return torch.stack(out)


def test_selector_spreads_cameras_on_a_ring():
    w2c = _arc(12)
    # the arc cameras look at the origin: their +z axis points to it
    c2w = torch.linalg.inv(w2c)
    assert torch.allclose(c2w[:, :3, 2], -c2w[:, :3, 3] / 2.0, atol=1e-9)
    images = torch.full((12, 3, 8, 8), 0.5)
    sel = CameraSelector().select(w2c, images, 4, image_features=np.zeros((12, 5)))
    assert len(set(sel)) == 4
    assert {0, 11} <= set(sel), f"the arc ends are not selected: {sel}"
    pos = sorted(sel)
    assert min(b - a for a, b in zip(pos, pos[1:])) >= 3, f"selected {sel} are not spread out"
    assert sel[0] in (5, 6)  # FPS starts at the camera closest to the feature mean


def test_selector_quality_bias_prefers_sharp_images():
    # two identical cameras/features: the FPS start is decided by the quality bias
    w2c = _ring(2)
    w2c = torch.stack([w2c[0], w2c[0]])
    flat = torch.full((1, 3, 16, 16), 0.5)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float().expand(1, 3, 16, 16)
    sel = CameraSelector().select(w2c, torch.cat([flat, checker]), 1, image_features=np.zeros((2, 3)))
    assert sel == [1]


def test_grey_and_quality_score():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    # channel 0 is weighted like OpenCV's blue (0.114), channel 2 like red (0.299)
    assert grey_opencv_bgr2gray(px).tolist() == [[29, 150, 76, 255]]
    flat = np.full((8, 8, 3), 77, dtype=np.uint8)
    assert image_quality_score(flat) == pytest.approx(0.0, abs=1e-5)
    checker = (((np.arange(8)[:, None] + np.arange(8)[None]) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    # grey 0/255 half each: entropy 1 bit, std 127.5; Laplacian +-1020 everywhere (reflect-101 keeps it)
    expected = 0.4 * math.log1p(1020.0**2) + 0.3 * 1.0 + 0.3 * 127.5 / 128
    assert image_quality_score(checker) == pytest.approx(expected, abs=1e-6)


def test_correspondence_scores_on_a_plane():
    H = W = 8
    K = torch.tensor([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    bank = torch.stack([_w2c(eye, [0, 0, 0]), _w2c(eye, [1.0, 0, 0]), _w2c(_rot_y(180), [0, 0, 0])])
    depth = torch.full((2, H, W), 2.0)
    target = torch.stack([_w2c(eye, [0, 0, 0])] * 2)
    sc = correspondence_scores(target, K, depth, bank, K, (W, H), num_correspondences=H * W)
    # bank 1 sees the plane shifted by 4 px: the right half of the target pixels
    assert sc.score[0].tolist() == [1.0, 0.5, 0.0]
    res = retrieve(target, K, bank, K, target_size=(W, H), method="correspondence", target_depth=depth,
                   num_correspondences=16, generator=torch.Generator().manual_seed(0))
    assert res.retrieved == [0] and res.ref_index == [0]


def test_retrieve_picks_identical_cameras_and_builds_ref_index():
    bank = _ring(10)
    K = torch.tensor([[4.0, 0, 4], [0, 4.0, 4], [0, 0, 1]], dtype=torch.float64)
    target = bank[[0, 3, 5, 5, 8]]
    res = retrieve(target, K, bank, K, target_size=(8, 8))
    assert res.retrieved == [3, 5, 5, 8]
    assert res.ref_index == [0, 1, 3]
    assert res.ref_bank_indices == [3, 5, 8]
    assert torch.equal(res.ref_w2c, bank[[3, 5, 8]])
    # long trajectories: every 4th pose when longer than nframe
    long = bank[[0, 1, 1, 1, 3, 1, 1, 1, 6]]
    res = retrieve(long, K, bank, K, target_size=(8, 8), nframe=4)
    assert res.frame_indices == [0, 4, 8] and res.retrieved == [3, 6]


def test_retrieve_selects_when_too_many_references():
    bank = _ring(12)
    K = torch.tensor([[4.0, 0, 4], [0, 4.0, 4], [0, 0, 1]], dtype=torch.float64)
    target = bank[[0] + list(range(1, 12))]
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    res = retrieve(target, K, bank, K, target_size=(8, 8), max_references=3, bank_images=images)
    assert res.selected_positions is not None and len(res.ref_bank_indices) == 3
    assert set(res.retrieved) <= {res.initial_retrieved[p] for p in res.selected_positions}
    assert res.ref_index == sorted(res.ref_index) and res.ref_index[0] == 0


def test_retrieve_input_errors():
    bank = _ring(3)
    with pytest.raises(ValueError, match="target_w2c"):
        retrieve(torch.eye(3), K2, bank, K2, target_size=(2, 2))
    with pytest.raises(ValueError, match="method"):
        retrieve(bank, K2, bank, K2, target_size=(2, 2), method="nearest")
    with pytest.raises(ValueError, match="target_depth"):
        retrieve(bank, K2, bank, K2, target_size=(2, 2), method="correspondence")
    with pytest.raises(ValueError, match="bank_images"):
        retrieve(_ring(12), K2, _ring(12), K2, target_size=(2, 2), max_references=2)


def test_selector_image_feature_backends(tmp_path):
    images = torch.rand(3, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    desc = CameraSelector().image_features(images)
    assert desc.shape == (3, 24 + 256)
    assert np.allclose(desc[:, :8].sum(1), 1.0)  # normalised red histogram
    calls = []
    feats = CameraSelector(lambda x: calls.append(x.shape) or x.mean(dim=(2, 3))).image_features(images)
    assert calls == [(3, 3, 20, 30)] and np.allclose(feats, images.mean(dim=(2, 3)).numpy(), atol=1e-6)
    # a tiny DINOv2 checkpoint on disk: pooled features, one image at a time
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=28, patch_size=14)
    torch.manual_seed(0)
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path)
    transformers.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    dino = CameraSelector(tmp_path).image_features(images)
    assert dino.shape == (3, 16) and np.isfinite(dino).all()
    assert not np.allclose(dino[0], dino[1])
