import numpy as np
import pytest
import torch
import trimesh

from worldstereo.reconstruction import Reconstruction, point_cloud_scores, reconstruct


def test_point_cloud_exact_depth_f1(scene):
    rec = reconstruct(scene["frames"], scene["cams"], "point_cloud", scene["depth"], progress=False)
    assert isinstance(rec, Reconstruction)
    for key in ("points", "colors", "normals", "cameras", "quality_metrics"):
        assert key in rec
    assert rec["points"].shape == rec["colors"].shape == rec["normals"].shape
    assert rec.points.dtype == torch.float32
    sc = point_cloud_scores(rec.points, scene["gt"], tau=scene["tau"])
    assert sc.f1 >= 0.95
    qm = rec.quality_metrics
    assert qm["num_points"] == rec.points.shape[0]
    assert qm["reprojection_psnr"] > 30
    assert qm["frame_consistency_psnr"] > 35


def test_random_per_frame_depth_scales_are_aligned(scene):
    rng = np.random.default_rng(7)
    mult = torch.from_numpy(rng.uniform(0.5, 2.0, size=8)).float()
    depth = scene["depth"] * mult[:, None, None]
    rec = reconstruct(scene["frames"], scene["cams"], "point_cloud", depth, scale_anchor="cameras", progress=False)
    assert point_cloud_scores(rec.points, scene["gt"], tau=scene["tau"]).f1 >= 0.90
    np.testing.assert_allclose(rec.depth_scales.numpy() * mult.numpy(), 1.0, rtol=2e-2)
    # without alignment the same input is far off
    bad = reconstruct(scene["frames"], scene["cams"], "point_cloud", depth, align_depth=False,
                      compute_metrics=False, progress=False)
    assert point_cloud_scores(bad.points, scene["gt"], tau=scene["tau"]).f1 < 0.5


def test_reference_points_fix_the_scale(scene):
    depth = scene["depth"] * 2.0
    rec = reconstruct(scene["frames"], scene["cams"], "point_cloud", depth, reference_points=scene["gt"],
                      compute_metrics=False, progress=False)
    np.testing.assert_allclose(rec.depth_scales.numpy(), 0.5, rtol=1e-2)


def test_mesh_f1(scene):
    rec = reconstruct(scene["frames"], scene["cams"], "mesh", scene["depth"], mesh_voxel_size=0.75 * scene["tau"],
                      progress=False)
    assert isinstance(rec.mesh, trimesh.Trimesh)
    pts, _ = trimesh.sample.sample_surface(rec.mesh, 100000, seed=0)
    assert point_cloud_scores(pts, scene["gt"], tau=scene["tau"]).f1 >= 0.90
    # vertex colours come from the frames (scene colours lie in a known range, not the default grey)
    vc = np.asarray(rec.mesh.visual.vertex_colors)[:, :3]
    assert vc.std() > 10
    assert rec.quality_metrics["num_faces"] == len(rec.mesh.faces)


class _FakeEstimator:
    """Returns the exact depth divided by its median (relative depth), as a DepthEstimator would."""

    def __init__(self, frames, depth):
        self.lookup = {float(f.sum()): d for f, d in zip(frames, depth)}

    def __call__(self, image):
        from types import SimpleNamespace

        d = self.lookup[float(image.sum())]
        return SimpleNamespace(depth=d / d.median(), valid_mask=torch.ones_like(d, dtype=torch.bool), is_metric=False)


def test_depth_estimator_input(scene):
    est = _FakeEstimator(scene["frames"], scene["depth"])
    rec = reconstruct(scene["frames"], scene["cams"], "point_cloud", est, scale_anchor="cameras",
                      compute_metrics=False, progress=False)
    assert point_cloud_scores(rec.points, scene["gt"], tau=scene["tau"]).f1 >= 0.9


def test_validation_errors(scene):
    f, c, d = scene["frames"], scene["cams"], scene["depth"]
    with pytest.raises(ValueError, match="method"):
        reconstruct(f, c, "voxels", d)
    with pytest.raises(ValueError, match="frames"):
        reconstruct(f[:, :2], c, "point_cloud", d)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        reconstruct(f * 255, c, "point_cloud", d)
    with pytest.raises(ValueError, match="depth"):
        reconstruct(f, c, "point_cloud", d[:3])
    with pytest.raises(ValueError, match="depth is required"):
        reconstruct(f, c, "point_cloud", None)
    with pytest.raises(ValueError, match="trajectory"):
        reconstruct(f[:4], c, "point_cloud", d[:4])
    with pytest.raises(TypeError, match="trajectory"):
        reconstruct(f, "cams.json", "point_cloud", d)
    with pytest.raises(ValueError, match="voxel_size"):
        reconstruct(f, c, "point_cloud", d, voxel_size=-1.0)


def test_reconstruction_is_a_mapping(scene):
    rec = reconstruct(scene["frames"][:3], scene["cams"][:3] if hasattr(scene["cams"], "__getitem__") else
                      scene["cams"], "point_cloud", scene["depth"][:3], progress=False)
    d = dict(rec)
    assert {"points", "colors", "normals", "cameras", "mesh", "field", "quality_metrics"} <= set(d)
    assert d["mesh"] is None and d["field"] is None
    pc = rec.point_cloud()
    assert len(pc) == rec.points.shape[0]
    with pytest.raises(KeyError):
        rec["nope"]


def test_trajectory_intrinsics_are_rescaled_to_the_frames(scene):
    """A trajectory described for 2x larger images gives the same reconstruction (K rows 0/1 rescaled,
    the project convention)."""
    from ._scene import make_trajectory

    c = scene["cams"]
    K2 = np.asarray(c.K, dtype=np.float64).copy()
    K2[:, :2] *= 2
    big = make_trajectory(np.asarray(c.w2c, dtype=np.float64), K2, 2 * c.height, 2 * c.width)
    a = reconstruct(scene["frames"], c, "point_cloud", scene["depth"], compute_metrics=False, progress=False)
    b = reconstruct(scene["frames"], big, "point_cloud", scene["depth"], compute_metrics=False, progress=False)
    np.testing.assert_allclose(b.points.numpy(), a.points.numpy(), atol=1e-5)
