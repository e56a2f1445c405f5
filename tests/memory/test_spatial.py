"""SpatialStereoMemory: bank maintenance, retrieval, WorldMirror export round trip."""

import json
import math

import pytest
import torch

from worldstereo.memory import SpatialStereoMemory
from worldstereo.memory.retrieval import retrieve


def _w2c_yaw(deg, centre=(0.0, 0.0, 0.0)):
    a = math.radians(deg)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    c2w[:3, 3] = torch.tensor(centre, dtype=torch.float64)
    return torch.linalg.inv(c2w)


def _K(h, w):
    return torch.tensor([[w / 2.0, 0, w / 2.0], [0, w / 2.0, h / 2.0], [0, 0, 1]], dtype=torch.float64)


def _clip(T, h=8, w=12, start_deg=0.0, step=5.0):
    frames = torch.rand(T, 3, h, w, generator=torch.Generator().manual_seed(T))
    w2c = torch.stack([_w2c_yaw(start_deg + step * t) for t in range(T)])
    return frames, w2c, _K(h, w)


def test_update_from_clip_keeps_reference_frames():
    mem = SpatialStereoMemory(frames_per_update=8)
    frames, w2c, K = _clip(21)
    mem.add(frames[0], w2c[0], K, names=["condition"])
    names = mem.update_from_clip(frames, w2c, K, prefix="view0/traj0")
    assert names == [f"view0/traj0/{i:04d}" for i in (3, 6, 9, 12, 14, 16, 18, 20)]
    assert torch.equal(mem.entries[-1].image, frames[20])
    assert torch.allclose(mem.w2c[1], w2c[3])
    # a short clip: all frames but frame 0
    assert len(mem.update_from_clip(*_clip(4))) == 3


def test_eviction_keeps_condition_view_and_respects_memory_size():
    mem = SpatialStereoMemory(memory_size=10, frames_per_update=8)
    frames, w2c, K = _clip(21)
    mem.add(frames[0], w2c[0], K, names=["condition"])
    all_names = []
    for k in range(6):
        all_names += mem.update_from_clip(frames, w2c, K, prefix=f"clip{k}")
        assert len(mem) <= 10
    assert len(mem) == 10
    assert mem.names[0] == "condition" and mem.entries[0].pinned
    assert mem.names[1:] == all_names[-9:]  # the newest frames survive


def test_retrieve_returns_resized_references():
    h, w = 8, 12
    mem = SpatialStereoMemory(max_references=8)
    yaws = [0, 20, 40, 60, 80]
    imgs = torch.stack([torch.full((3, 16, 24), i / 10) for i in range(5)])
    w2c = torch.stack([_w2c_yaw(y) for y in yaws])
    mem.add(imgs, w2c, _K(16, 24), names=[f"b{i}" for i in range(5)])
    target = torch.stack([_w2c_yaw(y) for y in (0, 40, 40, 80, 20)])
    refs = mem.retrieve(target, _K(h, w), h, w)
    # identical cameras are the best matches
    assert refs.bank_indices.tolist() == [2, 4, 1]
    assert refs.ref_index.tolist() == [0, 2, 3]
    assert refs.names == ["b2", "b4", "b1"]
    assert refs.images.shape == (3, 3, h, w)
    assert torch.allclose(refs.images[0], torch.full((3, h, w), 0.2), atol=1e-6)
    assert torch.allclose(refs.K[0], _K(h, w).float())
    assert torch.allclose(refs.w2c, w2c[[2, 4, 1]].float())


def test_retrieve_limits_references_with_selection():
    mem = SpatialStereoMemory(max_references=3)
    yaws = [10.0 * i for i in range(10)]
    mem.add(torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
            torch.stack([_w2c_yaw(y) for y in yaws]), _K(8, 8))
    target = torch.stack([_w2c_yaw(y) for y in [0.0] + yaws])
    refs = mem.retrieve(target, _K(8, 8), 8, 8)
    assert len(refs) == 3
    assert refs.retrieval.selected_positions is not None
    assert set(refs.retrieval.retrieved) == set(refs.bank_indices.tolist())
    # the references agree with the functional retrieval on the same bank
    res = retrieve(target, _K(8, 8), mem.w2c, mem.K, target_size=(8, 8), max_references=3,
                   bank_images=torch.stack([e.image for e in mem.entries]))
    assert res.ref_bank_indices == refs.bank_indices.tolist() and res.ref_index == refs.ref_index.tolist()


def test_correspondence_retrieval_needs_depth():
    mem = SpatialStereoMemory(retrieval="correspondence", num_correspondences=16)
    frames, w2c, K = _clip(3)
    mem.add(frames, w2c, K)
    with pytest.raises(ValueError, match="target_depth"):
        mem.retrieve(w2c, K, 8, 12)
    refs = mem.retrieve(w2c, K, 8, 12, target_depth=torch.full((3, 8, 12), 2.0))
    assert refs.bank_indices.tolist() == [1, 2]


def test_export_and_load_worldmirror_round_trip(tmp_path):
    mem = SpatialStereoMemory(memory_size=20)
    frames, w2c, K = _clip(21)
    mem.add(frames[0], w2c[0], K, names=["pano_bank/0000"])
    mem.update_from_clip(frames, w2c, K, prefix="view0/traj0")
    out = mem.export_worldmirror(tmp_path / "wm")
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["num_cameras"] == 9
    ids = [x["camera_id"] for x in cams["extrinsics"]]
    assert ids[0] == "pano_bank-0000" and ids[1] == "view0-traj0-0003"
    c2w = torch.tensor(cams["extrinsics"][1]["matrix"], dtype=torch.float64)
    assert torch.allclose(c2w @ w2c[3], torch.eye(4, dtype=torch.float64), atol=1e-9)
    assert all((out / "images" / f"{i}.png").is_file() for i in ids)
    name_map = json.loads((out / "name_map.json").read_text())
    assert name_map["pano_bank/0000"] == "0000" and name_map["view0/traj0/0020"] == "0008"
    assert not list(out.rglob(".*"))  # no temporary files left behind
    back = SpatialStereoMemory.load_worldmirror(out, memory_size=20)
    assert back.names == mem.names
    assert [e.pinned for e in back.entries] == [e.pinned for e in mem.entries]
    assert torch.allclose(back.w2c, mem.w2c, atol=1e-9) and torch.allclose(back.K, mem.K)
    for a, b in zip(back.entries, mem.entries):
        assert (a.image - b.image).abs().max() <= 0.5 / 255 + 1e-6


def test_input_errors():
    with pytest.raises(ValueError, match="memory_size"):
        SpatialStereoMemory(memory_size=0)
    with pytest.raises(ValueError, match="retrieval"):
        SpatialStereoMemory(retrieval="nearest")
    mem = SpatialStereoMemory()
    with pytest.raises(RuntimeError, match="empty"):
        mem.retrieve(torch.eye(4).expand(2, 4, 4), _K(8, 8), 8, 8)
    with pytest.raises(ValueError, match="w2c"):
        mem.add(torch.rand(2, 3, 8, 8), torch.eye(4), _K(8, 8))
    mem.add(torch.rand(3, 8, 8), torch.eye(4), _K(8, 8), names=["a"])
    with pytest.raises(ValueError, match="names"):
        mem.add(torch.rand(3, 8, 8), torch.eye(4), _K(8, 8), names=["a"])
