"""The reconstruction runs on the device of its inputs (CUDA when available; skipped otherwise)."""

import numpy as np
import pytest
import torch

from worldstereo.geometry.neighbors import knn_points
from worldstereo.reconstruction import point_cloud_scores, reconstruct

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_inputs_give_cpu_outputs(scene):
    rec = reconstruct(scene["frames"].numpy(), scene["cams"], "point_cloud", scene["depth"].numpy(), progress=False)
    for t in (rec.points, rec.colors, rec.normals, rec.depths):
        assert t.device.type == "cpu" and t.dtype == torch.float32
    assert rec.depth_scales.dtype == torch.float64


@cuda
@pytest.mark.parametrize("method", ["point_cloud", "mesh"])
def test_cuda_reconstruction_matches_the_cpu_one(scene, method):
    kw = dict(voxel_size=scene["tau"] / 2, progress=False)
    cpu = reconstruct(scene["frames"], scene["cams"], method, scene["depth"], **kw)
    gpu = reconstruct(scene["frames"].cuda(), scene["cams"], method, scene["depth"].cuda(), **kw)
    assert gpu.points.device.type == "cuda" and gpu.depths.device.type == "cuda"
    assert abs(gpu.points.shape[0] - cpu.points.shape[0]) <= 1e-3 * cpu.points.shape[0]
    assert point_cloud_scores(gpu.points.cpu(), cpu.points, tau=scene["tau"] / 4).f1 > 0.999
    np.testing.assert_allclose(gpu.depth_scales.numpy(), cpu.depth_scales.numpy(), rtol=1e-4)
    for k, v in cpu.quality_metrics.items():
        assert gpu.quality_metrics[k] == pytest.approx(v, rel=1e-3, abs=1e-3), k


@cuda
def test_cuda_knn_matches_the_kdtree():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 3, generator=g) * torch.tensor([1.0, 1.0, 0.01])
    q = torch.rand(3000, 3, generator=g) * 2 - 0.5
    for query in (pts, q):
        d_cpu, _ = knn_points(query, pts, 8)
        d_gpu, i_gpu = knn_points(query.cuda(), pts.cuda(), 8)
        assert i_gpu.device.type == "cuda"
        np.testing.assert_allclose(d_gpu.cpu().numpy(), d_cpu.numpy(), rtol=1e-5, atol=1e-7)
