"""`worldstereo generate` / `worldstereo multi-view` end to end with a tiny random model (no download).

Independent truths: the condition image and the analytic depth map (a wall at z = 3 with a box face
at z = 2 in the middle of the view) we write ourselves, the preset's analytic camera centres (in
median depths: 3), the pinhole K of the requested field of view, and frame counts / sizes decoded
straight from the MP4 files with PyAV.
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from worldstereo.cli import main
from worldstereo.io.image import save_image

IMG = 64  # condition image size (square)
H = W = 32  # generated size
FRAMES = 4
DIST = 0.2  # camera translation of the right / left presets


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tiny memory model, a smooth 64x64 condition image and its depth map (z in {2, 3}, median 3).

    Piecewise constant depth: the lifting drops pixels where the min-max normalised disparity
    changes fast, which on a 32-pixel plane tilted across the view would be every pixel."""
    from worldstereo.testing import save_tiny_model

    d = tmp_path_factory.mktemp("generate_inputs")
    model = save_tiny_model(d / "model", "worldstereo-memory")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, IMG), torch.linspace(0, 1, IMG), indexing="ij")
    image = torch.stack([xx, yy, 0.25 + 0.5 * xx * yy])
    save_image(d / "image.png", image)
    depth = torch.full((IMG, IMG), 3.0)
    depth[IMG // 4:3 * IMG // 4, IMG // 4:3 * IMG // 4] = 2.0
    np.save(d / "depth.npy", depth.numpy().astype(np.float32))
    # the path of `right --preset-arg distance=DIST`, as a trajectory file (K of a 512x512 image)
    from worldstereo.camera import CameraTrajectory

    CameraTrajectory.right(distance=DIST, num_frames=FRAMES).save(d / "right4.json")
    return {"right4": d / "right4.json", "dir": d, "model": model, "image": d / "image.png",
            "depth": d / "depth.npy", "image_tensor": image}


def _median(inputs) -> float:
    """The condition view's median depth, the unit of preset distances (torch's lower median)."""
    return float(torch.from_numpy(np.load(inputs["depth"])).median())


def _common(inputs, *extra: str) -> list[str]:
    return [str(inputs["image"]), "--model", str(inputs["model"]), "--frames", str(FRAMES), "--height", str(H),
            "--width", str(W), "--steps", "1", "--depth", str(inputs["depth"]), "--no-progress", *extra]


def _cli(command: str, *args: str) -> int:
    return main(["-q", "--threads", "1", command, *args])


def _decode(path) -> np.ndarray:
    """(T,H,W,3) uint8 frames decoded with PyAV (independent of worldstereo.io.video)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _check_memory_bank(bank, w2c_by_frame: list[torch.Tensor]) -> int:
    """cameras.json is a WorldMirror export whose c2w invert the generated cameras; returns its size."""
    cams = json.loads((bank / "cameras.json").read_text())
    images = sorted(p.stem for p in (bank / "images").glob("*.png"))
    assert cams["num_cameras"] == len(images) == len(cams["extrinsics"]) == len(cams["intrinsics"])
    assert sorted(e["camera_id"] for e in cams["extrinsics"]) == images
    c2w = {e["camera_id"]: torch.tensor(e["matrix"], dtype=torch.float64) for e in cams["extrinsics"]}
    # the pinned condition view sits at the identity (frame 0 of every trajectory)
    assert torch.allclose(c2w["condition"], torch.eye(4, dtype=torch.float64), atol=1e-5)
    # every stored clip frame is one of the generated cameras (c2w = inverse of a camera.json w2c)
    for cid, m in c2w.items():
        if cid == "condition":
            continue
        eye = torch.eye(4, dtype=torch.float64)
        assert any(torch.allclose(m @ w.double(), eye, atol=1e-4) for w in w2c_by_frame), cid
    return cams["num_cameras"]


def _check_points(path, expected: int) -> None:
    """points.ply lifts the plane z = 2 + u (u in [0, 1]) seen from the identity camera."""
    from worldstereo.io.ply import read_ply

    ply = read_ply(path)
    xyz = np.asarray(ply["xyz"], dtype=np.float64)
    assert xyz.shape == (expected, 3) and expected > 0
    assert ply["rgb"].shape == (expected, 3)
    assert xyz[:, 2].min() > 2.0 - 0.05 and xyz[:, 2].max() < 3.0 + 0.05


def test_generate_end_to_end(inputs, tmp_path):
    from worldstereo.camera import CameraTrajectory, intrinsics_from_fov

    out = tmp_path / "gen"
    code = _cli("generate", *_common(inputs, "--trajectory", "right", "--preset-arg", f"distance={DIST}",
                                     "--fov", "70", "--seed", "7", "--guidance", "3", "--prompt", "a room",
                                     "--out", str(out)))
    assert code == 0
    for name in ("video.mp4", "render.mp4", "render_mask.mp4", "camera.json", "image.png", "points.ply",
                 "summary.json", "memory_bank/cameras.json"):
        assert (out / name).is_file(), name
    assert [p.name for p in out.glob(".*")] == [".worldstereo-output.json"], "temporary files left behind"
    assert not list(out.parent.glob(".gen.*")), "staging folder left behind"
    video, render, mask = (_decode(out / n) for n in ("video.mp4", "render.mp4", "render_mask.mp4"))
    assert video.shape == render.shape == mask.shape == (FRAMES, H, W, 3)
    # frame 0 of the render is the condition image (resized 64 -> 32), with no holes
    truth = torch.nn.functional.interpolate(inputs["image_tensor"][None], size=(H, W), mode="bilinear",
                                            antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(render[0] / 255.0 - truth).mean() < 0.04
    assert mask[0].max() < 64

    traj = CameraTrajectory.from_reference_json(out / "camera.json")
    assert len(traj) == FRAMES and (traj.height, traj.width) == (H, W)
    assert torch.allclose(traj.K[0].float(), intrinsics_from_fov(H, W, 70.0).float(), atol=1e-3)
    assert torch.allclose(traj.centers[0].float(), torch.zeros(3), atol=1e-5)
    # preset distances are in median depths of the condition view
    assert torch.allclose(traj.centers[-1].float(), torch.tensor([DIST * _median(inputs), 0.0, 0.0]), atol=1e-5)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_depth"] == pytest.approx(_median(inputs))
    assert summary["fit_scale"] == 1.0 and summary["fit_trajectory"] is None
    # per-frame coverage of the render mask, and the render's depth next to camera.json
    holes = mask[..., 0] > 127
    assert summary["coverage"][0] == 1.0
    assert summary["coverage"] == pytest.approx([1.0 - float(h.mean()) for h in holes], abs=0.02)
    with np.load(out / "depths.npz") as z:
        depth, hole_mask = z["depth"], z["hole_mask"]
    assert depth.shape == hole_mask.shape == (FRAMES, H, W) and summary["files"]["depths"] == "depths.npz"
    assert (hole_mask == holes).mean() > 0.98 and (depth[hole_mask] == 0).all()
    # rendered depths lie on the wall or the box
    covered = depth[0][depth[0] > 0]  # frame 0 has no holes in the mask; depth 0 where the lifting dropped a pixel
    assert covered.size > 0.5 * H * W and covered.min() > 1.9 and covered.max() < 3.1
    assert summary["model"] == str(inputs["model"]) and summary["variant"] == "worldstereo-memory"
    assert summary["steps"] == 1 and summary["seed"] == 7 and summary["guidance_scale"] == 3.0
    assert summary["transformer_calls"] == 2  # one step, conditional + unconditional pass
    assert summary["num_frames"] == FRAMES and (summary["height"], summary["width"]) == (H, W)
    assert summary["image_size"] == [IMG, IMG] and summary["prompt"] == "a room"
    assert summary["num_references"] == len(summary["ref_index"]) == len(summary["reference_names"]) >= 1
    assert {"load_model", "sampling", "decode", "total"} <= set(summary["timings"])
    n_bank = _check_memory_bank(out / "memory_bank", list(traj.w2c))
    assert n_bank == summary["memory_bank_size"] > 1  # the condition view + generated frames
    _check_points(out / "points.ply", summary["num_points"])


def test_multi_view_shares_memory(inputs, tmp_path):
    from worldstereo.camera import CameraTrajectory

    out = tmp_path / "mv"
    # the second trajectory revisits the first one's path: with a shared memory its references are
    # the frames generated by the first video (a fresh memory would only hold the condition view)
    code = _cli("multi-view", *_common(inputs, "--trajectory", "right", "--trajectory", str(inputs["right4"]),
                                       "--preset-arg", f"distance={DIST}", "--guidance", "1", "--seed", "3",
                                       "--out", str(out)))
    assert code == 0
    trajs = []
    for i, sign in enumerate((1.0, 1.0)):
        for stem in ("video", "render", "render_mask"):
            assert _decode(out / f"{stem}_{i:02d}.mp4").shape == (FRAMES, H, W, 3)
        t = CameraTrajectory.from_reference_json(out / f"camera_{i:02d}.json")
        assert len(t) == FRAMES
        assert torch.allclose(t.centers[-1].float(), torch.tensor([sign * DIST * _median(inputs), 0.0, 0.0]),
                              atol=1e-5)
        with np.load(out / f"depths_{i:02d}.npz") as z:
            assert z["depth"].shape == (FRAMES, H, W)
        trajs.append(t)
    assert not (out / "video.mp4").exists()
    summary = json.loads((out / "summary.json").read_text())
    videos = summary["videos"]
    assert [v["index"] for v in videos] == [0, 1]
    assert [v["trajectory"] for v in videos] == ["right", str(inputs["right4"])]
    for v in videos:
        assert v["steps"] == 1 and v["seed"] == 3 and v["num_frames"] == FRAMES
        assert v["guidance_scale"] == 1.0 and v["transformer_calls"] == 1  # no CFG: one pass per step
        assert v["files"]["video"] == f"video_{v['index']:02d}.mp4"
        assert v["files"]["depths"] == f"depths_{v['index']:02d}.npz"
        assert len(v["coverage"]) == FRAMES and v["coverage"][0] == 1.0 and v["fit_scale"] == 1.0
    assert summary["transformer_calls"] == 2 and summary["num_videos"] == 2
    # shared memory: the first video referenced only the condition view, the second one retrieved
    # frames generated by the first
    assert videos[0]["reference_names"] == ["condition"]
    assert videos[1]["reference_names"] and all(n.startswith("clip0/") for n in videos[1]["reference_names"])
    n_bank = _check_memory_bank(out / "memory_bank", [w for t in trajs for w in t.w2c])
    assert n_bank == summary["memory_bank_size"]
    assert n_bank > 1 + (FRAMES - 1)  # frames of both videos are in the final bank
    _check_points(out / "points.ply", summary["num_points"])


@pytest.mark.parametrize("command", ["generate", "multi-view"])
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--trajectory", "--model", "--variant", "--steps", "--guidance", "--depth", "--dtype", "--out"):
        assert option in text


def test_variant_choices_match_models():
    from worldstereo.commands.generate import VARIANTS
    from worldstereo.models.config import MODEL_TYPES

    assert VARIANTS == MODEL_TYPES


@pytest.fixture
def no_model_loading(monkeypatch):
    """Bad input must be reported before the model is loaded."""
    from worldstereo.models.worldstereo import WorldStereo

    def _fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(WorldStereo, "from_pretrained", _fail)


@pytest.mark.parametrize(
    ("command", "change", "option"),
    [
        ("generate", {"image": "missing.png"}, "IMAGE"),
        ("generate", {"--trajectory": "sideways"}, "--trajectory"),
        ("generate", {"--height": "40"}, "--height"),
        ("generate", {"--depth": "wrong_size.npy"}, "--depth"),
        ("generate", {"--model": "no/such/folder"}, "--model"),
        ("generate", {"--preset-arg": "speed=2"}, "--preset-arg"),
        ("generate", {"--steps": "0"}, "--steps"),
        ("generate", {"--dtype": "int8"}, "--dtype"),
        ("multi-view", {"--trajectory": "nowhere.json"}, "--trajectory"),
        ("multi-view", {"--trajectory": None}, "--trajectory"),
    ],
)
def test_bad_input_exits_2(inputs, tmp_path, capsys, no_model_loading, command, change, option):
    np.save(tmp_path / "wrong_size.npy", np.full((IMG, IMG + 16), 2.0, dtype=np.float32))
    opts = {"image": str(inputs["image"]), "--model": str(inputs["model"]), "--trajectory": "right",
            "--frames": "2", "--height": str(H), "--width": str(W), "--steps": "1", "--depth": str(inputs["depth"]),
            "--out": str(tmp_path / "out")}
    for key, value in change.items():
        if value is not None and (key in ("image", "--depth") or value.endswith(".json")):
            value = str(tmp_path / value)  # a file name: a path in tmp_path (which may not exist)
        opts[key] = value
    argv = [opts.pop("image")]
    for key, value in opts.items():
        if value is not None:
            argv += [key, value]
    assert _cli(command, *argv) == 2
    err = capsys.readouterr().err
    assert option in err, err
    assert not (tmp_path / "out").exists()


def test_cuda_requested_without_cuda(inputs, tmp_path, capsys, no_model_loading):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    assert _cli("generate", *_common(inputs, "--trajectory", "right", "--device", "cuda",
                                     "--out", str(tmp_path / "o"))) == 2
    assert "--device" in capsys.readouterr().err


def test_variant_mismatch_names_model(inputs, tmp_path, capsys):
    code = _cli("generate", *_common(inputs, "--trajectory", "right", "--variant", "worldstereo-camera",
                                     "--out", str(tmp_path / "o")))
    assert code == 2
    assert "--model" in capsys.readouterr().err


def test_generate_camera_variant_has_no_memory_bank(inputs, tmp_path):
    from worldstereo.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "camera_model", "worldstereo-camera")
    out = tmp_path / "cam"
    argv = _common(inputs, "--trajectory", "forward", "--preset-arg", f"distance={DIST}", "--out", str(out))
    argv[argv.index("--model") + 1] = str(model)
    assert _cli("generate", *argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variant"] == "worldstereo-camera" and summary["num_references"] == 0
    assert summary["memory_bank_size"] == 0 and "memory_bank" not in summary["files"]
    assert not (out / "memory_bank").exists()
    assert _decode(out / "video.mp4").shape == (FRAMES, H, W, 3)
    _check_points(out / "points.ply", summary["num_points"])


def test_depth_model_scales_preset_and_gives_intrinsics(inputs, tmp_path, monkeypatch):
    """--depth-model: the estimator runs once on the condition image (its result is reused by the
    generation), its median depth sets the orbit's focus distance and its K (rescaled from IMAGE's
    64 px to 32 px) becomes the trajectory's intrinsics."""
    import worldstereo.depth as depth_pkg
    from worldstereo.camera import CameraTrajectory
    from worldstereo.depth import DepthPrediction

    calls: list[tuple[int, ...]] = []

    class FakeEstimator:
        def __call__(self, image):
            calls.append(tuple(image.shape))
            h, w = image.shape[-2:]
            K = torch.tensor([[0.8 * w, 0.0, w / 2], [0.0, 0.8 * w, h / 2], [0.0, 0.0, 1.0]])
            depth = torch.full((h, w), 4.0)
            return DepthPrediction(depth=depth, valid_mask=depth > 0, is_metric=False, K=K)

    seen: list[str] = []

    def fake_get(spec, *, device=None, **kwargs):
        if callable(spec):  # an estimator object is returned unchanged, as the real factory does
            return spec
        seen.append(spec)
        return FakeEstimator()

    monkeypatch.setattr(depth_pkg, "get_depth_estimator", fake_get)
    out = tmp_path / "dm"
    argv = [str(inputs["image"]), "--model", str(inputs["model"]), "--frames", str(FRAMES), "--height", str(H),
            "--width", str(W), "--steps", "1", "--depth-model", "fake/depth", "--trajectory", "orbit",
            "--no-progress", "--out", str(out)]
    assert _cli("generate", *argv) == 0
    assert seen == ["fake/depth"]
    assert calls.count((3, IMG, IMG)) == 1  # the condition image, estimated once
    traj = CameraTrajectory.from_reference_json(out / "camera.json")
    assert torch.allclose(traj.K[0].float(), torch.tensor([[25.6, 0, 16], [0, 25.6, 16], [0, 0, 1]]), atol=1e-3)
    # an orbit keeps its focus point, at the median depth (4) in front of the first camera, centred
    focus = torch.tensor([0.0, 0.0, 4.0, 1.0], dtype=torch.float64)
    for w2c in traj.w2c.double():
        p = w2c @ focus
        assert abs(p[0]) < 1e-4 and abs(p[1]) < 1e-4 and p[2] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth"] == "fake/depth"


def test_fit_trajectory_shortens_a_preset_that_leaves_the_scene(inputs, tmp_path):
    """`forward` of 2 median depths flies through the wall at z = 3; --fit-trajectory shortens the
    motion until every frame of the render covers at least the requested share. 256 pixels: the
    default point footprint is one pixel wide there."""
    from worldstereo.camera import CameraTrajectory

    common = _common(inputs, "--trajectory", "forward", "--preset-arg", "distance=2.0", "--guidance", "1",
                     "--height", "256", "--width", "256")
    assert _cli("generate", *common, "--out", str(tmp_path / "raw")) == 0
    raw = json.loads((tmp_path / "raw" / "summary.json").read_text())
    assert min(raw["coverage"]) < 0.3
    assert _cli("generate", *common, "--fit-trajectory", "0.6", "--out", str(tmp_path / "fit")) == 0
    fit = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert fit["fit_trajectory"] == 0.6 and 0 < fit["fit_scale"] < 1
    assert min(fit["coverage"]) >= 0.5  # measured on the model's own render
    raw_t = CameraTrajectory.from_reference_json(tmp_path / "raw" / "camera.json")
    fit_t = CameraTrajectory.from_reference_json(tmp_path / "fit" / "camera.json")
    torch.testing.assert_close(fit_t.centers, fit["fit_scale"] * raw_t.centers, atol=1e-4, rtol=0)
    torch.testing.assert_close(fit_t.w2c[:, :3, :3], raw_t.w2c[:, :3, :3])


def test_reconstruct_reads_generate_and_multi_view_folders(inputs, tmp_path):
    """`worldstereo reconstruct OUT` finds the video, cameras and render depth of an output folder
    (all videos of a multi-view folder together) and needs no depth model."""
    import trimesh

    gen, mv = tmp_path / "gen", tmp_path / "mv"
    assert _cli("generate", *_common(inputs, "--trajectory", "right", "--preset-arg", "distance=0.1",
                                     "--guidance", "1", "--out", str(gen))) == 0
    assert _cli("multi-view", *_common(inputs, "--trajectory", "right", "--trajectory", "left", "--preset-arg",
                                       "distance=0.1", "--guidance", "1", "--out", str(mv))) == 0
    for folder, frames in ((gen, FRAMES), (mv, 2 * FRAMES)):
        out = tmp_path / f"{folder.name}_3d"
        assert _cli("reconstruct", str(folder), "--out", str(out), "--formats", "ply,transforms") == 0
        xyz = np.asarray(trimesh.load(out / "points.ply").vertices)
        # the render depth lies on the wall (z = 3) or the box (z = 2): so do the points
        assert len(xyz) > 100 and xyz[:, 2].min() > 1.9 and xyz[:, 2].max() < 3.1
        transforms = json.loads((out / "nerfstudio" / "transforms.json").read_text())
        assert len(transforms["frames"]) == frames
