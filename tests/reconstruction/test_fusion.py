import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from worldstereo.reconstruction._common import camera_arrays, project, unproject
from worldstereo.reconstruction.fusion import (
    align_depth_scales,
    estimate_normals,
    fuse_depth_maps,
    statistical_outlier_removal,
    voxel_down_sample,
)


def test_unproject_project_round_trip():
    rng = np.random.default_rng(0)
    K = np.array([[50.0, 0.5, 31.0], [0, 55.0, 30.0], [0, 0, 1]])
    w2c = np.eye(4)
    w2c[:3, :3] = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    w2c[:3, 3] = [0.3, -0.2, 1.0]
    depth = rng.uniform(1, 3, size=(20, 24))
    pts, idx = unproject(depth, K, w2c)
    u, v, z = project(pts, K, w2c)
    np.testing.assert_allclose(z, depth.ravel()[idx], rtol=1e-10)
    # pixel (r, c) is lifted at its centre (c + 0.5, r + 0.5)
    np.testing.assert_allclose(u, idx % 24 + 0.5, atol=1e-9)
    np.testing.assert_allclose(v, idx // 24 + 0.5, atol=1e-9)


def test_voxel_down_sample_averages_per_voxel():
    xyz = np.array([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [1.5, 0.2, 0.2]])
    col = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out_xyz, out_col = voxel_down_sample(xyz, 1.0, col)
    assert out_xyz.shape == (2, 3)
    np.testing.assert_allclose(out_xyz[0], [0.2, 0.2, 0.2])
    np.testing.assert_allclose(out_col[0], [0.5, 0.5, 0])
    np.testing.assert_allclose(out_col[1], [0, 0, 1.0])
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_down_sample(xyz, 0.0)


def test_statistical_outlier_removal_drops_isolated_points():
    rng = np.random.default_rng(1)
    plane = np.c_[rng.uniform(0, 1, (2000, 2)), np.zeros(2000)]
    outliers = np.array([[0.5, 0.5, 3.0], [5.0, 5.0, 5.0], [-3.0, 0.2, 1.0]])
    keep = statistical_outlier_removal(np.r_[plane, outliers], k=8, std_ratio=2.0)
    assert not keep[-3:].any()
    assert keep[:-3].mean() > 0.97


def test_pca_normals_of_a_sphere_point_outward_toward_viewer():
    rng = np.random.default_rng(2)
    d = rng.normal(size=(3000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    xyz = 2.0 * d
    n = estimate_normals(xyz, k=12, toward=d)  # viewer outside -> outward normals
    cos = np.einsum("ij,ij->i", n, d)
    assert np.percentile(cos, 5) > 0.99
    n2 = estimate_normals(xyz, k=12, toward=-d)
    assert np.percentile(-np.einsum("ij,ij->i", n2, d), 5) > 0.99


def _f1(pred, gt, tau):
    dp, _ = cKDTree(gt).query(pred)
    dg, _ = cKDTree(pred).query(gt)
    p, r = (dp < tau).mean(), (dg < tau).mean()
    return 2 * p * r / (p + r)


def test_fusion_exact_depth_high_f1(scene):
    cams = camera_arrays(scene["cams"])
    fp = fuse_depth_maps(scene["frames"].numpy(), scene["depth"].numpy().astype(np.float64), cams,
                         voxel_size=scene["tau"] / 2)
    np.testing.assert_allclose(fp.scales, 1.0, atol=2e-3)
    assert _f1(fp.xyz, scene["gt"], scene["tau"]) >= 0.95
    assert fp.rgb.min() >= 0 and fp.rgb.max() <= 1


@pytest.mark.parametrize("anchor", ["first", "cameras"])
def test_scale_alignment_recovers_random_scales(scene, anchor):
    rng = np.random.default_rng(3)
    mult = rng.uniform(0.5, 2.0, size=8)
    if anchor == "first":
        mult[0] = 1.0
    depth = scene["depth"].numpy().astype(np.float64) * mult[:, None, None]
    cams = camera_arrays(scene["cams"])
    scales = align_depth_scales(depth, cams, anchor=anchor)
    np.testing.assert_allclose(scales * mult, 1.0, rtol=1e-2)


def test_scale_alignment_to_reference_points(scene):
    cams = camera_arrays(scene["cams"])
    depth = scene["depth"].numpy().astype(np.float64) * 0.37
    scales = align_depth_scales(depth, cams, reference_xyz=scene["gt"])
    np.testing.assert_allclose(scales, 1 / 0.37, rtol=1e-2)


def test_reference_alignment_falls_back_to_aligned_frames(scene):
    """Frames that do not see the reference points are chained to the frames aligned before them."""
    cams = camera_arrays(scene["cams"])
    depth = scene["depth"].numpy().astype(np.float64)
    mult = np.linspace(0.6, 1.8, 8)
    # reference = what frame 0 sees only
    ref, _ = unproject(depth[0], cams.K[0], cams.w2c[0])
    scales = align_depth_scales(depth * mult[:, None, None], cams, reference_xyz=ref)
    np.testing.assert_allclose(scales * mult, 1.0, rtol=1e-2)
