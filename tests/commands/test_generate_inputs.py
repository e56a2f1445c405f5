"""`worldstereo generate --inputs FOLDER` on the reference's own example folders (../shared/examples,
skipped when absent) with a tiny random memory model: one folder of each kind.

Independent truths: the example files themselves (decoded with PyAV here), the reference's
generation orders and keyframe rule (np.linspace), the tiny model's scale_map / nframe, and the
frame-bank sizes implied by the reference's update rule (min(8, F - 1) frames per video).
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from worldstereo.cli import main

NFRAME = 4  # tiny model's nframe
SIZE = (48, 64)  # tiny model's scale_map entry closest to 480x832 / 512x768 / 768x1024
KEEP_21 = [int(i) for i in np.linspace(0, 20, NFRAME, dtype=int)]  # [0, 6, 13, 20]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from worldstereo.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("inputs_model") / "memory", "worldstereo-memory")


def _cli(*args: str) -> int:
    return main(["-q", "--threads", "1", "generate", *args])


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _scene(examples_dir, kind: str, name: str | None = None):
    folder = examples_dir / kind
    return folder / name if name else sorted(p for p in folder.iterdir() if p.is_dir())[0]


def _check_videos(out, n: int) -> None:
    for i in range(n):
        for kind in ("video", "render", "render_mask"):
            frames = _decode(out / f"{kind}_{i:02d}.mp4")
            assert frames.shape == (NFRAME, *SIZE, 3), (kind, i)
        cams = json.loads((out / f"camera_{i:02d}.json").read_text())
        assert len(cams["extrinsic"]) == NFRAME and (cams["height"], cams["width"]) == SIZE


def test_reconstruction_folder(examples_dir, tiny, tmp_path):
    scene = _scene(examples_dir, "reconstruction", "kitchen")
    out = tmp_path / "out"
    assert _cli("--inputs", str(scene), "--model", str(tiny), "--out", str(out), "--steps", "1", "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    order = ["traj_eloop", "traj_up", "traj_right", "traj_left"]
    assert summary["inputs"]["kind"] == "reconstruction"
    assert summary["inputs"]["trajectories"] == [f"renders/{t}" for t in order]
    _check_videos(out, 4)
    for i, (video, traj) in enumerate(zip(summary["videos"], order)):
        assert video["inputs"]["render"] == str(scene / "renders" / traj / "render.mp4")
        assert video["frame_indices"] == KEEP_21 and video["conditioning"]["render"] == "given"
        assert video["conditioning"]["references"] == "retrieved" and video["num_references"] >= 1
        # the camera written is the folder's, subsampled: frame k of camera_NN = pose KEEP_21[k] (up to K rescale)
        src = json.loads((scene / "renders" / traj / "camera.json").read_text())
        got = json.loads((out / f"camera_{i:02d}.json").read_text())
        np.testing.assert_allclose(got["extrinsic"], np.asarray(src["extrinsic"])[KEEP_21], atol=1e-5)
    # the first trajectory can only retrieve the start image (the bank's single entry)
    assert summary["videos"][0]["reference_names"] == ["renders/pano_bank/image.png"]
    # the given render is what conditioned the video: render_01 frame 2 = the folder's frame 13, resized
    given = torch.from_numpy(_decode(scene / "renders" / "traj_up" / "render.mp4")[KEEP_21[2]]).permute(2, 0, 1)
    given = F.interpolate(given[None].float() / 255, size=SIZE, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    used = torch.from_numpy(_decode(out / "render_01.mp4")[2]).permute(2, 0, 1).float() / 255
    assert (used - given).abs().mean() < 0.03
    # bank: the start image + min(8, NFRAME - 1) frames of each of the 4 videos
    assert summary["memory_bank_size"] == 1 + 4 * (NFRAME - 1)
    bank = json.loads((out / "memory_bank" / "cameras.json").read_text())
    start = next(e for e in bank["extrinsics"] if "pano_bank" in e["camera_id"])
    np.testing.assert_allclose(start["matrix"], np.eye(4), atol=1e-6)  # registered at the identity
    assert not (out / "points.ply").exists()  # no geometric memory with given renders


def test_panorama_folder(examples_dir, tiny, tmp_path):
    scene = _scene(examples_dir, "panorama")
    out = tmp_path / "out"
    assert _cli("--inputs", str(scene), "--model", str(tiny), "--out", str(out), "--steps", "1", "--no-progress",
                "--seed", "3") == 0
    summary = json.loads((out / "summary.json").read_text())
    names = ["view0/traj2", "view0/traj0", "view0/traj1", "reconstruct_0/traj0", "reconstruct_0/traj1"]
    assert [v["trajectory"] for v in summary["videos"]] == names
    _check_videos(out, 5)
    assert [v["inputs"]["prompt"] for v in summary["videos"]] == [str(scene / n / "traj_caption.json") for n in names]
    # the bank starts with the 27 pano_bank crops; the first video retrieves from them only
    assert summary["memory_bank_size"] == 27 + 5 * (NFRAME - 1)
    assert all(r.startswith("pano_bank/") for r in summary["videos"][0]["reference_names"])
    # reconstruct_0/traj1 continues from the last frame generated for reconstruct_0/traj0
    assert "last generated frame of reconstruct_0/traj0" in summary["videos"][4]["inputs"]["condition_image"]
    last = _decode(out / "video_03.mp4")[-1].astype(np.float32)
    with Image.open(out / "image_04.png") as im:
        start = np.asarray(im, dtype=np.float32)
    assert np.abs(last - start).mean() < 6.0  # same frame, one H.264 round trip apart


def test_images_folder(examples_dir, tiny, tmp_path):
    scene = _scene(examples_dir, "images", "photorealistic-outdoor-city-062")
    with Image.open(scene / "image.png") as im:
        w, h = im.size
    depth = tmp_path / "depth.npy"
    np.save(depth, np.full((h, w), 3.0, dtype=np.float32))
    out = tmp_path / "out"
    assert _cli("--inputs", str(scene), "--model", str(tiny), "--out", str(out), "--steps", "1", "--no-progress",
                "--depth", str(depth)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"]["kind"] == "images" and summary["num_frames"] == NFRAME
    assert summary["prompt"] == json.loads((scene / "prompt.json").read_text())["long caption"]
    assert _decode(out / "video.mp4").shape == (NFRAME, *SIZE, 3)
    keep = [int(i) for i in np.linspace(0, 80, NFRAME, dtype=int)]  # 81 poses -> nframe keyframes
    src = np.asarray(json.loads((scene / "camera.json").read_text())["extrinsic"])[keep]
    np.testing.assert_allclose(json.loads((out / "camera.json").read_text())["extrinsic"], src, atol=1e-5)
    assert summary["conditioning"]["render"] == "geometric_memory"


@pytest.mark.parametrize("extra,message", [
    (["IMAGE"], "--inputs"),
    (["--trajectory", "forward"], "--inputs"),
    (["--depth", "depth.npy"], "--depth"),
    (["--height", "40", "--width", "64"], "--height"),
])
def test_bad_inputs_usage(examples_dir, tiny, tmp_path, capsys, extra, message):
    scene = _scene(examples_dir, "reconstruction", "kitchen")
    extra = [str(tmp_path / "img.png") if e == "IMAGE" else e for e in extra]
    code = _cli("--inputs", str(scene), "--model", str(tiny), "--out", str(tmp_path / "o"), *extra)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_inputs_folder_missing(tiny, tmp_path, capsys):
    assert _cli("--inputs", str(tmp_path / "nope"), "--model", str(tiny), "--out", str(tmp_path / "o")) == 2
    assert "inputs" in capsys.readouterr().err
    assert _cli("--model", str(tiny), "--out", str(tmp_path / "o")) == 2
    assert "--trajectory" in capsys.readouterr().err
