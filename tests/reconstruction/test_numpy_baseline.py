"""The PyTorch reconstruction gives the results of the NumPy implementation it replaced.

The reference is ``benchmarks/_reconstruction_numpy.py``, a verbatim copy of the package before the
port (float64 NumPy / SciPy), run on the same inputs. Tolerances (stated per quantity) cover float32
arithmetic and pixel-boundary rounding, nothing more: scales 1e-5 relative, fused points 1e-5 scene
units (same count), PSNR 1e-3 dB, SSIM 1e-4, scores 1e-6.
"""

import numpy as np
import pytest
import torch
import trimesh

from worldstereo.reconstruction import fusion, metrics, reconstruct
from worldstereo.reconstruction import mesh as mesh_mod
from worldstereo.reconstruction._common import camera_arrays

from ._scene import make_trajectory


@pytest.mark.parametrize("anchor", ["first", "cameras"])
def test_depth_scales(scene, numpy_baseline, anchor):
    mult = np.random.default_rng(3).uniform(0.5, 2.0, size=8)
    if anchor == "first":
        mult[0] = 1.0
    depth = scene["depth"] * torch.from_numpy(mult).float()[:, None, None]
    new = fusion.align_depth_scales(depth, camera_arrays(scene["cams"]), anchor=anchor).numpy()
    old = numpy_baseline.align_depth_scales(depth.double().numpy(), numpy_baseline.camera_arrays(scene["cams"]),
                                            anchor=anchor)
    np.testing.assert_allclose(new, old, rtol=1e-5)


def test_fused_points_normals_and_outliers(scene, numpy_baseline):
    voxel = scene["tau"] / 2
    new = fusion.fuse_depth_maps(scene["frames"], scene["depth"], camera_arrays(scene["cams"]), voxel_size=voxel)
    old = numpy_baseline.fuse_depth_maps(scene["frames"].double().numpy(), scene["depth"].double().numpy(),
                                         numpy_baseline.camera_arrays(scene["cams"]), voxel_size=voxel)
    assert new.xyz.shape == old.xyz.shape  # same voxels, same outliers removed, same order
    np.testing.assert_allclose(new.xyz.numpy(), old.xyz, atol=1e-5)
    np.testing.assert_allclose(new.rgb.numpy(), old.rgb, atol=1e-5)
    np.testing.assert_allclose(new.view_dirs.numpy(), old.view_dirs, atol=1e-5)
    cos = (new.normals.numpy() * old.normals).sum(1)
    assert (cos > 0).all()  # same orientation everywhere
    assert np.quantile(cos, 0.001) > 0.9999


def test_outlier_mask_is_identical(numpy_baseline):
    rng = np.random.default_rng(1)
    X = np.r_[np.c_[rng.uniform(0, 1, (3000, 2)), rng.normal(scale=0.01, size=3000)], rng.uniform(-2, 2, (40, 3))]
    spacing = rng.uniform(0.5, 1.5, len(X))
    new = fusion.statistical_outlier_removal(X, 8, 2.0, spacing=spacing).numpy()
    np.testing.assert_array_equal(new, numpy_baseline.statistical_outlier_removal(X, 8, 2.0, spacing=spacing))
    assert 0 < (~new).sum() < 100


def test_tsdf_volume(scene, numpy_baseline):
    gt = scene["gt"]
    surface = gt[::7]
    kw = dict(voxel_size=0.75 * scene["tau"], bounds=(gt.min(0) - 0.1, gt.max(0) + 0.1), surface_points=surface)
    new = mesh_mod.tsdf_fusion(scene["frames"], scene["depth"], camera_arrays(scene["cams"]), **kw)
    old = numpy_baseline.tsdf_fusion(scene["frames"].numpy(), scene["depth"].numpy(),
                                     numpy_baseline.camera_arrays(scene["cams"]), **kw)
    observed = old.weight > 0
    assert observed.sum() > 10000
    # the same frames observe the same voxels (a voxel whose projection falls on a pixel border may read
    # the neighbouring pixel: its colour / distance then come from there)
    assert (new.weight.numpy() == old.weight).mean() > 0.9999
    dt = np.abs(new.tsdf.numpy() - old.tsdf)[observed]
    dc = np.abs(new.color.numpy() - old.color)[observed].max(1)
    assert np.quantile(dt, 0.999) < 1e-5 and np.quantile(dc, 0.999) < 1e-5
    m_new, m_old = mesh_mod.mesh_from_tsdf(new), numpy_baseline.mesh_from_tsdf(old)
    assert abs(len(m_new.vertices) - len(m_old.vertices)) <= 1e-3 * len(m_old.vertices)


def test_image_metrics(scene, numpy_baseline):
    rng = np.random.default_rng(2)
    a = rng.uniform(size=(3, 40, 50))
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    m = rng.uniform(size=(40, 50)) > 0.3
    assert metrics.masked_psnr(a, b, m) == pytest.approx(numpy_baseline.masked_psnr(a, b, m), abs=1e-4)
    assert metrics.masked_ssim(a, b, m) == pytest.approx(numpy_baseline.masked_ssim(a, b, m), abs=1e-6)
    assert metrics.masked_ssim(a, b) == pytest.approx(numpy_baseline.masked_ssim(a, b), abs=1e-6)
    F, D = scene["frames"], scene["depth"]
    ca, co = camera_arrays(scene["cams"]), numpy_baseline.camera_arrays(scene["cams"])
    wn, vn = metrics.warp_frame(F[1], D[1], D[0], ca.K[1], ca.w2c[1], ca.K[0], ca.w2c[0])
    wo, vo = numpy_baseline.warp_frame(F[1].numpy(), D[1].numpy(), D[0].numpy(), co.K[1], co.w2c[1], co.K[0],
                                       co.w2c[0])
    assert (vn.numpy() == vo).mean() > 0.999
    both = vn.numpy() & vo
    np.testing.assert_allclose(wn.numpy()[:, both], wo[:, both], atol=1e-4)
    new = metrics.reprojection_psnr(F, D, scene["cams"])
    old = numpy_baseline.reprojection_psnr(F.numpy(), D.numpy(), scene["cams"])
    assert new["reprojection_psnr"] == pytest.approx(old["reprojection_psnr"], abs=1e-3)
    assert new["reprojection_ssim"] == pytest.approx(old["reprojection_ssim"], abs=1e-4)
    assert new["reprojection_valid_fraction"] == pytest.approx(old["reprojection_valid_fraction"], abs=1e-3)


def test_geometry_and_camera_scores(scene, numpy_baseline):
    rng = np.random.default_rng(4)
    pred = scene["gt"][::5] + rng.normal(scale=0.3 * scene["tau"], size=scene["gt"][::5].shape)
    new = metrics.point_cloud_scores(pred, scene["gt"], tau=scene["tau"]).as_dict()
    old = numpy_baseline.point_cloud_scores(pred, scene["gt"], tau=scene["tau"]).as_dict()
    for k in old:
        assert new[k] == pytest.approx(old[k], abs=1e-6), k
    w2c = np.asarray(scene["cams"].w2c, dtype=np.float64)
    moved = w2c.copy()
    moved[:, :3, 3] = moved[:, :3, 3] * 1.3 + rng.normal(scale=0.05, size=(8, 3))
    for align in ("sim3", "se3", "none"):
        new = metrics.camera_pose_errors(moved, w2c, align=align)
        old = numpy_baseline.camera_pose_errors(moved, w2c, align=align)
        for k in old:
            assert new[k] == pytest.approx(old[k], rel=1e-9, abs=1e-9), (align, k)


@pytest.mark.parametrize("method", ["point_cloud", "mesh"])
def test_reconstruct_quality_metrics(scene, numpy_baseline, method):
    kw = dict(voxel_size=scene["tau"] / 2, progress=False)
    new = reconstruct(scene["frames"], scene["cams"], method, scene["depth"], **kw)
    old = numpy_baseline.reconstruct(scene["frames"], scene["cams"], method, scene["depth"], **kw)
    assert new.points.shape[0] == old["points"].shape[0]
    qn, qo = new.quality_metrics, old["quality_metrics"]
    assert set(qn) == set(qo)
    assert qn["reprojection_psnr"] == pytest.approx(qo["reprojection_psnr"], abs=1e-3)
    assert qn["reprojection_ssim"] == pytest.approx(qo["reprojection_ssim"], abs=1e-4)
    assert qn["frame_consistency_psnr"] == pytest.approx(qo["frame_consistency_psnr"], abs=1e-3)
    assert qn["frame_consistency_valid_fraction"] == pytest.approx(qo["frame_consistency_valid_fraction"], abs=1e-4)
    if method == "mesh":
        assert abs(qn["num_vertices"] - qo["num_vertices"]) <= 1e-3 * qo["num_vertices"]
        a = trimesh.sample.sample_surface(new.mesh, 50000, seed=0)[0]
        b = trimesh.sample.sample_surface(old["mesh"], 50000, seed=0)[0]
        f_new = metrics.point_cloud_scores(a, scene["gt"], tau=scene["tau"]).f1
        f_old = metrics.point_cloud_scores(b, scene["gt"], tau=scene["tau"]).f1
        assert f_new == pytest.approx(f_old, abs=2e-3)


def test_default_voxel_size_is_close_to_the_exact_percentiles(scene, numpy_baseline):
    """The default voxel size comes from the percentiles of every 16th pixel; the result matches the
    all-pixel NumPy default closely (same scene coverage, point count within 1 %)."""
    new = reconstruct(scene["frames"], scene["cams"], "point_cloud", scene["depth"], compute_metrics=False,
                      progress=False)
    old = numpy_baseline.reconstruct(scene["frames"], scene["cams"], "point_cloud", scene["depth"],
                                     compute_metrics=False)
    assert abs(new.points.shape[0] - old["points"].shape[0]) <= 0.01 * old["points"].shape[0]
    assert metrics.point_cloud_scores(new.points, old["points"], tau=scene["tau"] / 4).f1 > 0.99


def test_trajectory_in_another_image_size(scene, numpy_baseline):
    """K given for 2x larger images is rescaled to the frames exactly as before."""
    c = scene["cams"]
    K2 = np.asarray(c.K, dtype=np.float64).copy()
    K2[:, :2] *= 2
    big = make_trajectory(np.asarray(c.w2c, dtype=np.float64), K2, 2 * c.height, 2 * c.width)
    new = camera_arrays(big, height=c.height, width=c.width)
    old = numpy_baseline.camera_arrays(big, height=c.height, width=c.width)
    np.testing.assert_array_equal(new.K.numpy(), old.K)
    np.testing.assert_array_equal(new.w2c.numpy(), old.w2c)
