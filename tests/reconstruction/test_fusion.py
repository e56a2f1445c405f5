import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from worldstereo.geometry.lifting import unproject_depth
from worldstereo.geometry.projection import project_points
from worldstereo.reconstruction import fusion
from worldstereo.reconstruction._common import camera_arrays
from worldstereo.reconstruction.fusion import (
    align_depth_scales,
    estimate_normals,
    fuse_depth_maps,
    statistical_outlier_removal,
    voxel_down_sample,
)


def test_unproject_project_round_trip():
    rng = np.random.default_rng(0)
    K = torch.tensor([[50.0, 0.5, 31.0], [0, 55.0, 30.0], [0, 0, 1]], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = torch.from_numpy(Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix())
    w2c[:3, 3] = torch.tensor([0.3, -0.2, 1.0])
    depth = torch.from_numpy(rng.uniform(1, 3, size=(20, 24)))
    pts = unproject_depth(depth, K, w2c)
    u, v, z = project_points(pts, w2c, K)
    idx = np.arange(20 * 24)
    np.testing.assert_allclose(z[0].numpy(), depth.reshape(-1).numpy(), rtol=1e-10)
    # pixel (r, c) is lifted at its centre (c + 0.5, r + 0.5)
    np.testing.assert_allclose(u[0].numpy(), idx % 24 + 0.5, atol=1e-9)
    np.testing.assert_allclose(v[0].numpy(), idx // 24 + 0.5, atol=1e-9)


def test_voxel_down_sample_averages_per_voxel():
    xyz = np.array([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [1.5, 0.2, 0.2]])
    col = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out_xyz, out_col = voxel_down_sample(xyz, 1.0, col)
    assert out_xyz.shape == (2, 3)
    np.testing.assert_allclose(out_xyz[0], [0.2, 0.2, 0.2], atol=1e-7)
    np.testing.assert_allclose(out_col[0], [0.5, 0.5, 0])
    np.testing.assert_allclose(out_col[1], [0, 0, 1.0])
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_down_sample(xyz, 0.0)


def test_voxel_down_sample_order_negative_coordinates_and_far_offsets():
    """Voxels come out in lexicographic (x, y, z) order of their index (floor(xyz / v)), negative
    indices included; means stay exact far from the origin (points are summed relative to their voxel)."""
    rng = np.random.default_rng(4)
    ijk = rng.integers(-5, 5, size=(300, 3))
    xyz = (ijk + rng.uniform(0.1, 0.9, size=(300, 3))) * 0.5 + 1e4 * 0.5  # voxel-aligned shift of 2e4 voxels
    out, cnt = voxel_down_sample(torch.from_numpy(xyz).float(), 0.5, torch.ones(300, 1))
    keys, inv = np.unique(np.floor(xyz / 0.5).astype(np.int64), axis=0, return_inverse=True)
    expected = np.stack([xyz[inv.ravel() == i].mean(0) for i in range(len(keys))])
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-3)  # float32 input at 5000: ulp 5e-4
    np.testing.assert_array_equal(np.floor(out.numpy() / 0.5).astype(np.int64), keys)


def test_voxel_sums_stream_like_one_batch():
    """Feeding the points in chunks (as fuse_depth_maps streams frames) gives the one-batch result."""
    rng = np.random.default_rng(5)
    xyz = torch.from_numpy(rng.uniform(-1, 1, size=(5000, 3))).float()
    attr = torch.from_numpy(rng.uniform(size=(5000, 2))).float()
    one = fusion._VoxelSums(0.1)
    one.add(torch.cat([xyz, attr], 1))
    many = fusion._VoxelSums(0.1)
    for s in range(0, 5000, 700):
        many.add(torch.cat([xyz[s:s + 700], attr[s:s + 700]], 1))
    for a, b in zip(one.means(), many.means()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def _f1(pred, gt, tau):
    dp, _ = cKDTree(gt).query(pred)
    dg, _ = cKDTree(pred).query(gt)
    p, r = (dp < tau).mean(), (dg < tau).mean()
    return 2 * p * r / (p + r)


def test_fusion_exact_depth_high_f1(scene):
    cams = camera_arrays(scene["cams"])
    fp = fuse_depth_maps(scene["frames"], scene["depth"], cams, voxel_size=scene["tau"] / 2)
    np.testing.assert_allclose(fp.scales, 1.0, atol=2e-3)
    assert fp.xyz.dtype == torch.float32 and fp.scales.dtype == torch.float64
    assert _f1(fp.xyz.numpy(), scene["gt"], scene["tau"]) >= 0.95
    assert fp.rgb.min() >= 0 and fp.rgb.max() <= 1


def test_fusion_streams_frames_in_chunks(scene, monkeypatch):
    """One frame per chunk gives the cloud of all frames at once: memory is bounded by the chunk, not
    by the number of frames."""
    cams = camera_arrays(scene["cams"])
    whole = fuse_depth_maps(scene["frames"], scene["depth"], cams, align=False)
    monkeypatch.setattr(fusion, "_CHUNK_PIXELS", 80 * 80)
    assert fusion.frames_per_chunk(80, 80, fusion._CHUNK_PIXELS) == 1
    streamed = fuse_depth_maps(scene["frames"], scene["depth"], cams, align=False)
    assert streamed.xyz.shape == whole.xyz.shape
    np.testing.assert_allclose(streamed.xyz.numpy(), whole.xyz.numpy(), atol=1e-5)
    np.testing.assert_allclose(streamed.rgb.numpy(), whole.rgb.numpy(), atol=1e-5)


def test_voxel_sums_fall_back_to_index_rows_beyond_the_packed_range():
    """A cloud more than 2^20 voxels across (e.g. a far outlier) is reduced by index rows, with the
    same result as the packed keys."""
    xyz = torch.tensor([[0.05, 0.05, 0.05], [0.06, 0.04, 0.05], [0.15, 0.0, 0.0], [-0.05, 0.0, 0.0]])
    a, = voxel_down_sample(xyz, 0.1)
    b, = voxel_down_sample(torch.cat([xyz, torch.tensor([[2e5, 0.0, 0.0]])]), 0.1)
    np.testing.assert_allclose(b[:-1].numpy(), a.numpy(), atol=1e-6)
    np.testing.assert_allclose(b[-1].numpy(), [2e5, 0, 0])
    np.testing.assert_allclose(a.numpy(), [[-0.05, 0, 0], [0.055, 0.045, 0.05], [0.15, 0, 0]], atol=1e-6)


@pytest.mark.parametrize("anchor", ["first", "cameras"])
def test_scale_alignment_recovers_random_scales(scene, anchor):
    rng = np.random.default_rng(3)
    mult = rng.uniform(0.5, 2.0, size=8)
    if anchor == "first":
        mult[0] = 1.0
    depth = scene["depth"] * torch.from_numpy(mult).float()[:, None, None]
    cams = camera_arrays(scene["cams"])
    scales = align_depth_scales(depth, cams, anchor=anchor)
    np.testing.assert_allclose(scales.numpy() * mult, 1.0, rtol=1e-2)


def test_scale_alignment_to_reference_points(scene):
    cams = camera_arrays(scene["cams"])
    depth = scene["depth"] * 0.37
    scales = align_depth_scales(depth, cams, reference_xyz=scene["gt"])
    np.testing.assert_allclose(scales.numpy(), 1 / 0.37, rtol=1e-2)


def test_reference_alignment_falls_back_to_aligned_frames(scene):
    """Frames that do not see the reference points are chained to the frames aligned before them."""
    cams = camera_arrays(scene["cams"])
    depth = scene["depth"]
    mult = torch.linspace(0.6, 1.8, 8)
    # reference = what frame 0 sees only
    ref = unproject_depth(depth[0], cams.K[0], cams.w2c[0])
    scales = align_depth_scales(depth * mult[:, None, None], cams, reference_xyz=ref)
    np.testing.assert_allclose(scales.numpy() * mult.numpy(), 1.0, rtol=1e-2)


def test_median_relative_deviation_of_sorted_ratios():
    rng = np.random.default_rng(6)
    for n in (1, 2, 7, 400, 401):
        r = torch.sort(torch.from_numpy(rng.uniform(0.5, 1.5, n))).values
        for m in (float(r[n // 2]), 0.3, 1.7, 1.0):
            expected = float(np.median(np.abs(r.numpy() / m - 1.0)))
            assert fusion._median_relative_deviation(r, m) == pytest.approx(expected, abs=1e-12)
