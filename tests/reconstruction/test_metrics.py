import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from worldstereo.reconstruction._common import camera_arrays
from worldstereo.reconstruction.metrics import (
    camera_pose_errors,
    icp_align,
    masked_psnr,
    masked_ssim,
    point_cloud_scores,
    reprojection_psnr,
    umeyama_alignment,
    warp_frame,
)

from ._scene import make_trajectory


def _brute_scores(P, G, tau):
    D = np.linalg.norm(P[:, None] - G[None], axis=-1)
    p = (D.min(1) < tau).mean()
    r = (D.min(0) < tau).mean()
    f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return p, r, f, D.min(1).mean(), D.min(0).mean()


def test_point_cloud_scores_match_brute_force():
    rng = np.random.default_rng(0)
    G = rng.uniform(-1, 1, (400, 3))
    P = np.r_[G[:300] + rng.normal(scale=0.03, size=(300, 3)), rng.uniform(-2, 2, (80, 3))]
    tau = 0.05
    sc = point_cloud_scores(P, G, tau=tau)
    p, r, f, acc, comp = _brute_scores(P, G, tau)
    assert sc.precision == pytest.approx(p) and sc.recall == pytest.approx(r) and sc.f1 == pytest.approx(f)
    assert sc.accuracy == pytest.approx(acc) and sc.completeness == pytest.approx(comp)
    ts = np.linspace(2 * tau / 50, 2 * tau, 50)
    assert sc.auc == pytest.approx(np.mean([_brute_scores(P, G, t)[2] for t in ts]))
    assert point_cloud_scores(G, G, tau=tau).f1 == 1.0


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    R = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    s, t = 2.5, np.array([1.0, -2.0, 0.5])
    Y = s * X @ R.T + t
    s2, R2, t2 = umeyama_alignment(X, Y)
    assert s2 == pytest.approx(s)
    np.testing.assert_allclose(R2.numpy(), R, atol=1e-10)
    np.testing.assert_allclose(t2.numpy(), t, atol=1e-10)
    s3, _, _ = umeyama_alignment(X, Y, with_scale=False)
    assert s3 == 1.0


def test_icp_refines_small_rigid_offset():
    rng = np.random.default_rng(2)
    G = rng.uniform(-1, 1, (3000, 3)) * [1, 0.6, 0.3]
    R = Rotation.from_rotvec([0.03, -0.02, 0.04]).as_matrix()
    P = (G - 0.02) @ R.T
    s, R2, t = icp_align(P, G, iterations=50)
    np.testing.assert_allclose(s * P @ R2.numpy().T + t.numpy(), G, atol=1e-4)


def _traj(n, rng):
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=(n, 3))).as_matrix()
    w2c[:, :3, 3] = rng.normal(size=(n, 3))
    return w2c


def test_point_cloud_scores_aligns_with_cameras():
    rng = np.random.default_rng(3)
    G = rng.uniform(-1, 1, (500, 3))
    w2c_gt = _traj(6, rng)
    S = np.eye(4)
    S[:3, :3] = 0.5 * Rotation.from_rotvec([0.4, 0.2, -0.3]).as_matrix()
    S[:3, 3] = [3, 1, 2]
    P = G @ S[:3, :3].T + S[:3, 3]
    c2w_pred = S @ np.linalg.inv(w2c_gt)
    c2w_pred[:, :3, :3] /= 0.5  # keep rotations orthonormal: centres move by S, orientations by R
    w2c_pred = np.linalg.inv(c2w_pred)
    K = np.array([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]])
    sc = point_cloud_scores(P, G, tau=0.01, pred_cameras=make_trajectory(w2c_pred, K[None].repeat(6, 0), 64, 64),
                            reference_cameras=make_trajectory(w2c_gt, K[None].repeat(6, 0), 64, 64))
    assert sc.f1 == pytest.approx(1.0)
    assert sc.sim3[0] == pytest.approx(2.0)


def test_camera_pose_errors():
    rng = np.random.default_rng(4)
    w2c = _traj(5, rng)
    e = camera_pose_errors(w2c, w2c)
    assert e["rot_err_deg"] == pytest.approx(0, abs=1e-6) and e["ate"] == pytest.approx(0, abs=1e-9)
    # similarity-transformed copy: zero error after sim3 alignment, scale recovered
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.1, 0.5, -0.2]).as_matrix()
    T[:3, 3] = [1, 2, 3]
    c2w = T @ np.linalg.inv(w2c)
    c2w[:, :3, 3] *= 3.0
    e = camera_pose_errors(np.linalg.inv(c2w), w2c)
    assert e["ate"] == pytest.approx(0, abs=1e-9) and e["scale"] == pytest.approx(1 / 3)
    assert e["rot_err_deg"] == pytest.approx(0, abs=1e-5)
    # known perturbation without alignment: 10 degree rotation error, 0.5 translation error
    c2w = np.linalg.inv(w2c)
    pert = c2w.copy()
    pert[:, :3, :3] = c2w[:, :3, :3] @ Rotation.from_rotvec([0, np.deg2rad(10), 0]).as_matrix()
    pert[:, :3, 3] += [0.3, 0.4, 0]
    e = camera_pose_errors(np.linalg.inv(pert), w2c, align="none")
    assert e["rot_err_deg"] == pytest.approx(10.0) and e["trans_err"] == pytest.approx(0.5)
    assert e["ate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="align"):
        camera_pose_errors(w2c, w2c, align="bogus")


def test_masked_psnr_and_ssim():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(3, 32, 32))
    b = a.copy()
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    b[:, 16:] = 0  # outside the mask: ignored
    assert masked_psnr(a, b, mask) == float("inf")
    b[:, :16] += 0.1
    assert masked_psnr(a, b, mask) == pytest.approx(20.0)
    assert masked_ssim(a, a) == pytest.approx(1.0)
    assert masked_ssim(a, rng.uniform(size=(3, 32, 32))) < 0.2
    with pytest.raises(ValueError, match="shape"):
        masked_psnr(a, a[:, :10])


def test_reprojection_of_exact_scene_is_consistent(scene):
    frames, depth = scene["frames"].numpy(), scene["depth"].numpy()
    res = reprojection_psnr(frames, depth, scene["cams"])
    assert res["reprojection_psnr"] > 35 and res["reprojection_valid_fraction"] > 0.4
    cams = camera_arrays(scene["cams"])
    _, valid = warp_frame(frames[1], depth[1], depth[0], cams.K[1], cams.w2c[1], cams.K[0], cams.w2c[0])
    assert valid.dtype == torch.bool and valid.float().mean() > 0.4
    # a wrong depth scale breaks consistency
    bad = reprojection_psnr(frames, depth * np.linspace(1, 1.5, 8)[:, None, None], scene["cams"])
    assert bad["reprojection_valid_fraction"] < res["reprojection_valid_fraction"]
