"""End-to-end behaviour of generate_video / generate_multi_view / reconstruct_3d with tiny random
models on CPU (issue: the interface document end to end)."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.camera import CameraTrajectory
from worldstereo.pipeline import SceneMemory, generate_multi_view, generate_video
from worldstereo.testing import tiny_model

H = W = 32


@pytest.fixture(scope="module")
def memory_model():
    return tiny_model("worldstereo-memory")


@pytest.fixture(scope="module")
def dmd_model():
    return tiny_model("worldstereo-memory-dmd")


@pytest.fixture(scope="module")
def camera_model():
    return tiny_model("worldstereo-camera")


def _image(seed: int = 0, h: int = H, w: int = W) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _depth(h: int = H, w: int = W) -> torch.Tensor:
    # a tilted plane: depth grows with the row index (exact, known geometry)
    rows = torch.linspace(1.5, 3.0, h)[:, None].expand(h, w)
    return rows.clone()


def _const_depth(value: float):
    """A depth estimator returning a constant depth map of each image's size."""
    from worldstereo.depth import DepthPrediction

    def estimate(image: torch.Tensor) -> DepthPrediction:
        h, w = image.shape[-2:]
        return DepthPrediction(depth=torch.full((h, w), value), valid_mask=torch.ones(h, w, dtype=torch.bool),
                               is_metric=False)

    return estimate


def _traj(n: int, kind: str = "forward", **kw) -> CameraTrajectory:
    return CameraTrajectory.preset(kind, num_frames=n, height=H, width=W, **kw)


class _Recorder:
    """Forward pre-hook on the transformer that records the keyword inputs of every call."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.handle = model.transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append({k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})

    def close(self):
        self.handle.remove()


def test_generate_video_shape_range_seed_and_callback(memory_model, tmp_path):
    steps: list[tuple[int, int]] = []
    kw = dict(num_frames=16, height=64, width=64, num_inference_steps=2, depth_estimator=torch.ones(64, 64) * 2)
    traj64 = CameraTrajectory.forward(distance=0.3, num_frames=16, height=64, width=64)
    out = tmp_path / "video.mp4"
    v1 = generate_video(memory_model, _image(0, 64, 64), traj64, seed=7, save_path=str(out),
                        progress_callback=lambda s, n, lat: steps.append((s, n)), **kw)
    assert v1.shape == (16, 3, 64, 64) and v1.dtype == torch.float32
    assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0
    assert steps == [(1, 2), (2, 2)]
    with av.open(str(out)) as container:
        n_decoded = sum(1 for _ in container.decode(video=0))
    assert n_decoded == 16
    v2 = generate_video(memory_model, _image(0, 64, 64), traj64, seed=7, **kw)
    assert torch.equal(v1, v2)
    v3 = generate_video(memory_model, _image(0, 64, 64), traj64, seed=8, **kw)
    assert not torch.equal(v1, v3)


def test_output_formats(camera_model, tmp_path):
    traj = _traj(4, distance=0.2)
    kw = dict(num_frames=4, height=H, width=W, num_inference_steps=1, seed=3, depth_estimator=_depth())
    t = generate_video(camera_model, _image(), traj, output_format="tensor", **kw)
    n = generate_video(camera_model, _image(), traj, output_format="numpy", **kw)
    p = generate_video(camera_model, _image(), traj, output_format="pil", **kw)
    path = tmp_path / "out.mp4"
    v = generate_video(camera_model, _image(), traj, output_format="video", save_path=str(path), **kw)
    assert isinstance(n, np.ndarray) and n.shape == (4, H, W, 3) and n.dtype == np.float32
    np.testing.assert_array_equal(n, t.permute(0, 2, 3, 1).numpy())
    assert isinstance(p, list) and len(p) == 4 and all(isinstance(i, Image.Image) and i.size == (W, H) for i in p)
    np.testing.assert_allclose(np.asarray(p[1]) / 255.0, n[1], atol=1 / 255 + 1e-6)
    assert torch.equal(v, t) and path.stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp*")), "temporary files left behind"


def test_dmd_steps_and_single_pass(dmd_model):
    rec = _Recorder(dmd_model)
    steps = []
    try:
        generate_video(dmd_model, _image(), _traj(4, distance=0.2), num_frames=4, height=H, width=W, seed=0,
                       depth_estimator=_depth(), progress_callback=lambda s, n, lat: steps.append(n))
    finally:
        rec.close()
    n_steps = dmd_model.config.dmd_steps
    assert len(steps) == n_steps and len(rec.calls) == n_steps  # one transformer call per DMD step
    ts = [float(c["timestep"][0]) for c in rec.calls]
    assert ts == sorted(ts, reverse=True) and ts[0] == pytest.approx(float(dmd_model.config.dmd_end_steps))


def test_unipc_guidance_two_passes_differ_only_in_text(memory_model):
    rec = _Recorder(memory_model)
    try:
        generate_video(memory_model, _image(), _traj(4, distance=0.2), num_frames=4, height=H, width=W,
                       num_inference_steps=2, guidance_scale=5.0, seed=0, depth_estimator=_depth(),
                       prompt="a room", negative_prompt="blurry")
    finally:
        rec.close()
    assert len(rec.calls) == 4  # 2 steps x (cond + uncond)
    cond, uncond = rec.calls[0], rec.calls[1]
    assert not torch.equal(cond["encoder_hidden_states"], uncond["encoder_hidden_states"])
    for key in ("hidden_states", "timestep", "encoder_hidden_states_image", "render_latent", "render_mask",
                "camera_embedding", "reference_latent", "ref_index", "camera_qt", "camera_qt_ref"):
        assert torch.equal(cond[key], uncond[key]), key


def test_geometric_memory_switch(camera_model):
    rec = _Recorder(camera_model)
    kw = dict(num_frames=4, height=H, width=W, num_inference_steps=1, seed=0, depth_estimator=_depth())
    try:
        generate_video(camera_model, _image(), _traj(4, distance=0.2), use_geometric_memory=True, **kw)
        generate_video(camera_model, _image(), _traj(4, distance=0.2), use_geometric_memory=False, **kw)
    finally:
        rec.close()
    on, off = rec.calls[0], rec.calls[-1]
    assert on["render_mask"][0, 0, 0].sum() == 0  # frame 0 is the condition image, mask 0
    assert float(on["render_mask"].mean()) < 0.9  # the point cloud covers much of the view
    assert torch.all(off["render_mask"] == 1)  # all-hole mask
    assert not torch.equal(on["render_latent"], off["render_latent"])
    # camera rays still guide; the preset is in median depths (x 2.25 with the depth, x 1 without:
    # nothing gives the scale), which the normalised Plücker map does not see beyond float rounding
    torch.testing.assert_close(on["camera_embedding"], off["camera_embedding"], atol=1e-6, rtol=0)


def test_spatial_memory_switch_uses_condition_view_only(memory_model):
    rec = _Recorder(memory_model)
    mem = SceneMemory()
    kw = dict(num_frames=4, height=H, width=W, num_inference_steps=1, seed=0, depth_estimator=_depth())
    try:
        generate_multi_view(memory_model, _image(), [_traj(4, "right", distance=0.3), _traj(4, "left", distance=0.3)],
                            shared_memory=True, use_spatial_memory=False, memory=mem, **kw)
    finally:
        rec.close()
    for call in rec.calls:
        assert call["ref_index"].tolist() == [0]
        assert call["reference_latent"].shape[2] == 1
    assert mem.spatial is None or len(mem.spatial) == 0
    assert all(r.reference_names == ["condition"] for r in mem.history)


@pytest.mark.parametrize("shared", [True, False])
def test_multi_view_shared_memory_references(memory_model, shared):
    rec = _Recorder(memory_model)
    kw = dict(num_frames=6, height=H, width=W, num_inference_steps=1, seed=0, depth_estimator=_depth())
    trajs = [_traj(6, "right", distance=0.4), _traj(6, "right", distance=0.5)]
    try:
        mem = SceneMemory() if shared else None
        videos = generate_multi_view(memory_model, _image(), trajs, shared_memory=shared,
                                     **({"memory": mem} if shared else {}), **kw)
    finally:
        rec.close()
    assert len(videos) == 2 and all(v.shape == (6, 3, H, W) for v in videos)
    second = rec.calls[-1]
    if shared:
        names = mem.history[1].reference_names
        assert any(n.startswith("clip0/") for n in names), names  # retrieved from the first video
        assert second["reference_latent"].shape[2] == len(names) >= 2
        assert len(mem.spatial) > 1 and len(mem.geometric) > 0
    else:
        assert second["ref_index"].tolist() == [0] and second["reference_latent"].shape[2] == 1


def test_memory_caps_hold_after_five_videos():
    model = tiny_model("worldstereo-memory")
    model.global_memory_config = {**model.global_memory_config, "max_points": 300}
    model.spatial_memory_config = {**model.spatial_memory_config, "memory_size": 5, "frames_per_update": 2}
    mem = SceneMemory()
    kinds = ["right", "left", "up", "down", "forward"]
    generate_multi_view(model, _image(), [_traj(4, k, distance=0.3) for k in kinds], shared_memory=True, memory=mem,
                        num_frames=4, height=H, width=W, num_inference_steps=1, seed=0, depth_estimator=_depth())
    assert len(mem.history) == 5
    assert 0 < len(mem.geometric) <= 300
    assert len(mem.spatial) == 5
    assert "condition" in mem.spatial.names  # the condition view is never evicted


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_frames=5), "num_frames"),
        (dict(height=30), "height"),
        (dict(width=0), "width"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(point_cloud=torch.zeros(5, 4)), "point_cloud"),
        (dict(point_cloud=torch.zeros(0, 3)), "point_cloud"),
        (dict(use_geometric_memory="yes"), "use_geometric_memory"),
        (dict(use_spatial_memory=1), "use_spatial_memory"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(output_format="gif"), "output_format"),
        (dict(output_format="video"), "save_path"),
        (dict(save_path="/nonexistent-dir/x.mp4"), "save_path"),
        (dict(save_path="out.avi"), "save_path"),
        (dict(progress_callback=3), "progress_callback"),
        (dict(prompt=5), "prompt"),
        (dict(camera_trajectory="forward"), "camera_trajectory"),
        (dict(condition_image="/nonexistent/image.png"), "condition_image"),
        (dict(condition_image=torch.zeros(2, 3, 8, 8)), "condition_image"),
        (dict(model=object()), "model"),
    ],
)
def test_bad_arguments_fail_before_model_work(camera_model, kwargs, match):
    rec = _Recorder(camera_model)
    args = dict(model=camera_model, condition_image=_image(), camera_trajectory=_traj(4, distance=0.2), num_frames=4,
                height=H, width=W, num_inference_steps=1, depth_estimator=_depth())
    args.update(kwargs)
    try:
        with pytest.raises((ValueError, TypeError, FileNotFoundError), match=match):
            generate_video(**args)
    finally:
        rec.close()
    assert rec.calls == []


def test_multi_view_bad_arguments(camera_model):
    with pytest.raises(ValueError, match="trajectories"):
        generate_multi_view(camera_model, _image(), [])
    with pytest.raises(TypeError, match=r"trajectories\[1\]"):
        generate_multi_view(camera_model, _image(), [_traj(4), "left"])
    with pytest.raises(TypeError, match="shared_memory"):
        generate_multi_view(camera_model, _image(), [_traj(4)], shared_memory="yes")


def test_panorama_condition_image_builds_pano_bank_and_equirect_cloud(memory_model):
    from worldstereo.memory import GlobalGeometricMemory

    pano = _image(5, 32, 64)  # 2:1 equirectangular
    mem = SceneMemory(geometric=GlobalGeometricMemory(update_frequency="never"))
    rec = _Recorder(memory_model)
    traj = CameraTrajectory.pan_right(angle_deg=30.0, num_frames=4, height=H, width=W, fov_deg=90.0)
    try:
        video = generate_video(memory_model, pano, traj, num_frames=4, height=H, width=W, num_inference_steps=1,
                               seed=0, depth_estimator=_const_depth(2.0), memory=mem)
    finally:
        rec.close()
    assert video.shape == (4, 3, H, W)
    from worldstereo.geometry.panorama import equirect_to_perspective
    from worldstereo.pipeline import PANO_BANK_VIEWS

    # the condition view is the panorama seen through trajectory frame 0
    expected0 = equirect_to_perspective(pano, traj.w2c[0], traj.K[0], H, W).clamp(0, 1)
    cond_latent = rec.calls[0]["render_latent"]
    assert cond_latent.shape[2] == 4
    assert mem.geometric is not None and len(mem.geometric) > 0
    radii = mem.geometric.points.xyz.norm(dim=-1)
    torch.testing.assert_close(radii, torch.full_like(radii, 2.0), atol=1e-4, rtol=0)  # a sphere of range 2
    bank = [n for n in mem.spatial.names if n.startswith("pano_bank/")]
    assert len(bank) == len(PANO_BANK_VIEWS)
    torch.testing.assert_close(mem.spatial.entries[0].image, expected0)
    with pytest.raises(ValueError, match="condition_image"):
        generate_video(memory_model, _image(0, 32, 48), traj, num_frames=4, height=H, width=W, panorama=True,
                       depth_estimator=torch.ones(32, 48))


def test_reconstruct_3d_bad_method_fails_before_model_work(camera_model):
    from worldstereo.pipeline import reconstruct_3d

    rec = _Recorder(camera_model)
    try:
        with pytest.raises(ValueError, match="reconstruction_method"):
            reconstruct_3d(camera_model, _image(), _traj(4), reconstruction_method="voxels", num_frames=4)
        with pytest.raises(ValueError, match="num_frames"):
            reconstruct_3d(camera_model, _image(), _traj(4), num_frames=6, height=H, width=W)
        with pytest.raises(ValueError, match="output_format"):
            reconstruct_3d(camera_model, _image(), _traj(4), num_frames=4, output_format="pil")
    finally:
        rec.close()
    assert rec.calls == []


def test_reconstruct_3d_point_cloud(camera_model):
    from worldstereo.pipeline import reconstruct_3d

    video, rec = reconstruct_3d(camera_model, _image(), _traj(4, distance=0.2), num_frames=4, height=H, width=W,
                                num_inference_steps=1, seed=0, depth_estimator=_const_depth(2.0))
    assert video.shape == (4, 3, H, W)
    for key in ("points", "colors", "normals", "cameras", "quality_metrics"):
        assert key in rec, key
    assert rec["points"].shape[1] == 3 and rec["points"].shape[0] > 0
    assert rec["colors"].shape == rec["points"].shape


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from worldstereo.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("pipe") / "model", "worldstereo-camera")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(model_path=3), TypeError, "model_path"),
        (dict(device="not-a-device"), ValueError, "device"),
        (dict(torch_dtype=torch.int8), ValueError, "torch_dtype"),
        (dict(enable_xformers="yes"), TypeError, "enable_xformers"),
        (dict(enable_cpu_offload=1), TypeError, "enable_cpu_offload"),
    ],
)
def test_pipeline_class_bad_arguments(tiny_folder, kwargs, exc, match):
    from worldstereo.pipeline import WorldStereoPipeline

    args = dict(model_path=str(tiny_folder), device="cpu", torch_dtype=torch.float32)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        WorldStereoPipeline(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_pipeline_class_cuda_missing_suggests_cpu(tiny_folder):
    from worldstereo.pipeline import WorldStereoPipeline

    with pytest.raises(RuntimeError, match=r"device=.cpu."):
        WorldStereoPipeline(str(tiny_folder))


def test_pipeline_class_cpu_fallbacks_and_methods(tiny_folder, caplog):
    from worldstereo.pipeline import WorldStereoPipeline

    with pytest.warns(UserWarning):  # xformers missing -> SDPA, one warning
        pipe = WorldStereoPipeline(str(tiny_folder), device="cpu", torch_dtype=torch.float16, enable_cpu_offload=True)
    assert pipe.torch_dtype == torch.float32  # float16 on CPU falls back to float32
    assert next(pipe.model.transformer.parameters()).dtype == torch.float32
    video = pipe.generate_video(_image(), _traj(4, distance=0.2), num_frames=4, height=H, width=W,
                                num_inference_steps=1, seed=0, depth_estimator=_depth())
    assert video.shape == (4, 3, H, W)


def test_generate_video_under_model_cpu_offload_is_unchanged(monkeypatch):
    """The offload hooks (exercised with the CPU standing in for the accelerator) leave the result
    bit-identical and every component, the ControlNet included, is swapped in during generation."""
    import worldstereo.optimization as opt

    monkeypatch.setattr(opt, "_accelerator_available", lambda: True)
    model = tiny_model("worldstereo-memory")
    kw = dict(num_frames=4, height=H, width=W, num_inference_steps=1, seed=0, depth_estimator=_depth())
    expected = generate_video(model, _image(), _traj(4, distance=0.2), **kw)
    handle = opt.enable_model_cpu_offload(model, device="cpu")
    try:
        assert opt.execution_device(model) == torch.device("cpu")
        got = generate_video(model, _image(), _traj(4, distance=0.2), **kw)
        visited = {name for action, name in handle.history if action == "load"}
    finally:
        handle.remove()
    assert torch.equal(expected, got)
    assert {"text_encoder", "image_encoder", "vae", "transformer", "controlnet"} <= visited


def test_reference_selection_uses_the_configured_image_features():
    """More distinct retrieved views than max_references -> the quality-aware selection runs on the
    image features of spatial_memory_config['image_feature_model'] (here a recording callable)."""
    seen: list[tuple[int, ...]] = []

    def features(images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape))
        return images.mean(dim=(2, 3))

    model = tiny_model("worldstereo-memory")
    model.spatial_memory_config = {**model.spatial_memory_config, "max_references": 2, "image_feature_model": features}
    mem = SceneMemory()
    generate_multi_view(model, _image(), [_traj(8, "right", distance=0.6), _traj(8, "right", distance=0.7)],
                        memory=mem, num_frames=8, height=H, width=W, num_inference_steps=1, seed=0,
                        depth_estimator=_depth())
    assert seen, "the image feature model was never called"
    assert all(r.num_references <= 2 for r in mem.history)
    assert mem.history[1].num_references == 2
