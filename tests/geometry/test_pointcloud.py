"""PointCloud validation, combination, reduction and PLY round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldstereo.geometry.pointcloud import PointCloud


def _pc(n: int = 20, seed: int = 0, normals: bool = False) -> PointCloud:
    g = torch.Generator().manual_seed(seed)
    nrm = torch.randn(n, 3, generator=g) if normals else None
    return PointCloud(torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g), nrm)


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="xyz"):
        PointCloud(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="rgb"):
        PointCloud(torch.zeros(4, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        PointCloud(torch.tensor([[0.0, float("nan"), 0.0]]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="rgb"):
        PointCloud(torch.zeros(1, 3), torch.full((1, 3), 1.5))
    with pytest.raises(ValueError, match="normals"):
        PointCloud(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="xyz"):
        PointCloud(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="xyz"):
        PointCloud([[0, 0, 0]], torch.zeros(1, 3))  # type: ignore[arg-type]


def test_uint8_colours_and_dtype() -> None:
    pc = PointCloud(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[0, 128, 255]] * 2, dtype=torch.uint8))
    assert pc.xyz.dtype == torch.float32 and pc.rgb.dtype == torch.float32
    assert torch.allclose(pc.rgb[0], torch.tensor([0.0, 128 / 255, 1.0]))


def test_from_tensor_variants() -> None:
    xyz = torch.randn(5, 3)
    pc = PointCloud.from_tensor(xyz)
    assert torch.equal(pc.xyz, xyz) and torch.all(pc.rgb == 0.5)
    pc = PointCloud.from_tensor(torch.cat([xyz, torch.full((5, 3), 0.25)], 1))
    assert torch.all(pc.rgb == 0.25)
    pc = PointCloud.from_tensor(torch.cat([xyz, torch.full((5, 3), 51.0)], 1))  # 8-bit colours
    assert torch.allclose(pc.rgb, torch.full((5, 3), 0.2))
    pc = PointCloud.from_tensor(xyz.numpy(), colors=np.full((5, 3), 255, np.uint8))
    assert torch.all(pc.rgb == 1.0)
    assert torch.equal(PointCloud.from_tensor(pc.to_tensor()).xyz, pc.xyz)
    with pytest.raises(ValueError, match="points"):
        PointCloud.from_tensor(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="colours"):
        PointCloud.from_tensor(torch.cat([xyz, torch.full((5, 3), 300.0)], 1))


def test_cat_merge_and_normals() -> None:
    a, b = _pc(3, 0, normals=True), _pc(4, 1, normals=True)
    c = a.merge(b)
    assert len(c) == 7 and torch.equal(c.xyz[:3], a.xyz) and torch.equal(c.xyz[3:], b.xyz)
    assert c.normals is not None and torch.equal(c.normals[3:], b.normals)
    d = PointCloud.cat([a, _pc(2, 2)])
    assert len(d) == 5 and d.normals is None
    with pytest.raises(ValueError, match="clouds"):
        PointCloud.cat([])


def test_voxel_down_sample_averages_per_voxel() -> None:
    xyz = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.2, 0.4], [1.2, 0.0, 0.0], [-0.2, 0.0, 0.0]])
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2]])
    out = PointCloud(xyz, rgb).voxel_down_sample(0.5)
    assert len(out) == 3
    # ordered by voxel index: (-1,0,0), (0,0,0), (2,0,0)
    assert torch.allclose(out.xyz[1], torch.tensor([0.2, 0.15, 0.25]))
    assert torch.allclose(out.rgb[1], torch.full((3,), 0.5))
    assert torch.allclose(out.xyz[0], xyz[3]) and torch.allclose(out.xyz[2], xyz[2])
    n = PointCloud(xyz[:2], rgb[:2], torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])).voxel_down_sample(1.0)
    assert torch.allclose(n.normals, torch.tensor([[0.0, 2**-0.5, 2**-0.5]]))
    with pytest.raises(ValueError, match="voxel_size"):
        PointCloud(xyz, rgb).voxel_down_sample(0.0)
    assert len(PointCloud.empty().voxel_down_sample(1.0)) == 0


def test_random_down_sample_and_crop() -> None:
    pc = _pc(100)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = pc.random_down_sample(10, g1), pc.random_down_sample(10, g2)
    assert len(a) == 10 and torch.equal(a.xyz, b.xyz)
    # a subset of the original rows, in original order
    idx = [int((pc.xyz == p).all(1).nonzero()[0]) for p in a.xyz]
    assert idx == sorted(idx) and len(set(idx)) == 10
    assert pc.random_down_sample(1000) is pc
    with pytest.raises(ValueError, match="n"):
        pc.random_down_sample(-1)
    box = pc.crop([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    inside = ((pc.xyz >= -0.5) & (pc.xyz <= 0.5)).all(1)
    assert len(box) == int(inside.sum()) and torch.equal(box.xyz, pc.xyz[inside])
    with pytest.raises(ValueError, match="min_xyz"):
        pc.crop([1, 1, 1], [0, 0, 0])


def test_ply_round_trip(tmp_path: Path) -> None:
    pc = _pc(30, normals=True)
    pc.save_ply(tmp_path / "c.ply")
    back = PointCloud.load_ply(tmp_path / "c.ply")
    assert torch.equal(back.xyz, pc.xyz)
    assert (back.rgb - pc.rgb).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation
    assert torch.equal(back.normals, pc.normals)


def test_to_and_len() -> None:
    pc = _pc(5)
    assert pc.to("cpu") is pc and len(pc) == 5 and not pc.is_empty and PointCloud.empty().is_empty
