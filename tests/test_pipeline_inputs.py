"""generate_video with caller-given conditioning: a pre-rendered render video + hole mask, reference
views with cameras and RoPE slots, and the initial noise (tiny random models, CPU).

Independent truths: the tensors we pass (what the transformer must receive, recorded with forward
hooks by the conformance recorder), the model's own building blocks applied to them by hand, nearest-neighbour block
patterns whose downsampling is known exactly, and the frame count of a video file we write.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worldstereo.camera import CameraTrajectory, camera_qt_tokens
from worldstereo.conformance.pipeline_checks import PipelineRecorder as _Recorder
from worldstereo.models.conditioning import prepare_reference_latent
from worldstereo.pipeline import SceneMemory, generate_video
from worldstereo.testing import tiny_model

H, W, N = 32, 48, 4


@pytest.fixture(scope="module")
def memory_model():
    return tiny_model("worldstereo-memory")


@pytest.fixture(scope="module")
def camera_model():
    return tiny_model("worldstereo-camera")


def _image(seed: int = 0, h: int = H, w: int = W) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _traj(n: int = N) -> CameraTrajectory:
    return CameraTrajectory.preset("right", num_frames=n, height=H, width=W, distance=0.3)


def _render(n: int = N, h: int = H, w: int = W, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(n, 3, h, w, generator=g)
    mask = (torch.rand(n, 1, h // 8, w // 8, generator=g) < 0.5).float().repeat_interleave(8, -2).repeat_interleave(8, -1)
    mask[0] = 0
    return video, mask


def _no_depth(image):  # any depth request is a failure: given renders need none
    raise AssertionError("depth was estimated although a render was given")


def _args(model, **kw):
    args = dict(model=model, condition_image=_image(), camera_trajectory=_traj(), num_frames=N, height=H, width=W,
                num_inference_steps=1, guidance_scale=1.0, seed=0, depth_estimator=_no_depth)
    args.update(kw)
    return args


def test_given_render_reaches_the_controlnet_unchanged(camera_model):
    video, mask = _render()
    image = _image()
    memory = SceneMemory()
    with _Recorder(camera_model) as rec:
        out = generate_video(**_args(camera_model, render_video=video, render_mask=mask, memory=memory))
    assert out.shape == (N, 3, H, W)
    call = rec.calls[0]
    # the mask is passed as given (batch first, channels, frames)
    assert torch.equal(call["render_mask"], mask.permute(1, 0, 2, 3)[None])
    # the render latent is the keyframe latent of the given video with frame 0 = the condition image
    expected_video = video.clone()
    expected_video[0] = image
    with torch.no_grad():
        expected = camera_model.encode_video((expected_video * 2 - 1).permute(1, 0, 2, 3)[None])
    torch.testing.assert_close(call["render_latent"], expected, atol=1e-5, rtol=0)
    # no geometric memory was built, and the record says where the conditioning came from
    assert memory.geometric is None
    record = memory.history[-1]
    assert record.conditioning == {"render": "given", "latents": "seed"}
    assert torch.equal(record.render_mask, mask) and torch.equal(record.render_video[1:], video[1:])


def test_given_render_is_resized_like_the_reference(camera_model):
    """A 2x render: the mask is nearest-downsampled (blocks of 16 px -> 8 px, exact) and thresholded at
    0.5; the video is bicubic-resized without antialiasing (torch's F.interpolate, as the reference)."""
    video = _render(h=2 * H, w=2 * W)[0]
    coarse = (torch.rand(N, 1, H // 8, W // 8, generator=torch.Generator().manual_seed(7)) < 0.5).float()
    coarse[0] = 0
    coarse[1, 0, 0, 0] = 1
    mask = 0.7 * coarse.repeat_interleave(16, -2).repeat_interleave(16, -1)  # 0.7 >= 0.5 -> 1 (hole)
    mask[1, :, :16, :16] = 0.3  # a block below the threshold -> 0
    mask[2, :, 1::2, 1::2] = 1.0 - mask[2, :, 1::2, 1::2]  # odd pixels: never sampled by the 2x nearest resize
    expected = coarse.clone()
    expected[1, 0, 0, 0] = 0
    with _Recorder(camera_model) as rec:
        generate_video(**_args(camera_model, render_video=video, render_mask=mask))
    got = rec.calls[0]["render_mask"][0].permute(1, 0, 2, 3)
    assert torch.equal(got, expected.repeat_interleave(8, -2).repeat_interleave(8, -1))
    small = F.interpolate(video, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
    small[0] = _image()
    with torch.no_grad():
        expected = camera_model.encode_video((small * 2 - 1).permute(1, 0, 2, 3)[None])
    torch.testing.assert_close(rec.calls[0]["render_latent"], expected, atol=1e-5, rtol=0)


def test_render_from_video_files(camera_model, tmp_path):
    from worldstereo.io.video import write_video

    video, mask = _render()
    write_video(tmp_path / "render.mp4", video)
    write_video(tmp_path / "render_mask.mp4", mask.expand(-1, 3, -1, -1))
    with _Recorder(camera_model) as rec:
        generate_video(**_args(camera_model, render_video=tmp_path / "render.mp4",
                               render_mask=str(tmp_path / "render_mask.mp4")))
    # white / black survive H.264 well enough for the 0.5 threshold
    assert torch.equal(rec.calls[0]["render_mask"][0].permute(1, 0, 2, 3), mask)


def test_given_references_and_latents(memory_model):
    g = torch.Generator().manual_seed(3)
    refs = torch.rand(2, 3, H, W, generator=g)
    traj = _traj()
    ref_w2c = traj.w2c[[1, 3]].clone()
    ref_w2c[:, 0, 3] += 0.5
    latents = torch.randn(1, 16, N, H // 8, W // 8, generator=g)
    video, mask = _render()
    memory = SceneMemory()
    kw = dict(render_video=video, render_mask=mask, reference_images=refs, reference_w2c=ref_w2c, ref_index=[0, 2],
              latents=latents, memory=memory)
    with _Recorder(memory_model) as rec:
        out_a = generate_video(**_args(memory_model, seed=1, **kw))
    call = rec.calls[0]
    assert torch.equal(call["hidden_states"][:, :16], latents)
    assert call["ref_index"].tolist() == [0, 2] and call["ref_index"].dtype == torch.int64
    with torch.no_grad():
        z = memory_model.encode_video((refs * 2 - 1).permute(1, 0, 2, 3)[None])
    torch.testing.assert_close(call["reference_latent"], prepare_reference_latent(z), atol=1e-5, rtol=0)
    qt, qt_ref = camera_qt_tokens(traj.w2c.float(), ref_w2c.float())
    torch.testing.assert_close(call["camera_qt"], qt, atol=1e-6, rtol=0)
    torch.testing.assert_close(call["camera_qt_ref"], qt_ref, atol=1e-6, rtol=0)
    # the given noise replaces the seed: another seed gives the same video
    out_b = generate_video(**_args(memory_model, seed=2, **{**kw, "memory": None}))
    assert torch.equal(out_a, out_b)
    record = memory.history[-1]
    assert record.conditioning == {"render": "given", "references": "given", "latents": "given"}
    assert record.ref_index == [0, 2] and record.reference_names == ["given/00", "given/01"]
    # the frame bank is still updated with the generated frames (spatial memory on by default)
    assert len(memory.spatial) == min(memory_model.spatial_memory_config["frames_per_update"], N - 1)


def test_single_reference_defaults_to_slot_zero(memory_model):
    with _Recorder(memory_model) as rec:
        generate_video(**_args(memory_model, render_video=_render()[0], render_mask=_render()[1],
                               reference_images=_image(5)[None], reference_w2c=_traj().w2c[:1]))
    assert rec.calls[0]["ref_index"].tolist() == [0]


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(render_video=_render()[0]), ValueError, "render_mask"),
        (dict(render_mask=_render()[1]), ValueError, "render_video"),
        (dict(render_video=_render(n=3)[0], render_mask=_render()[1]), ValueError, "render_video.*frames"),
        (dict(render_video=_render()[0] * 2 - 1, render_mask=_render()[1]), ValueError, r"render_video.*\[0, 1\]"),
        (dict(render_video=_render()[0], render_mask=_render()[1] * 2), ValueError, "render_mask"),
        (dict(render_video=_render()[0][:, :2], render_mask=_render()[1]), ValueError, "render_video.*shape"),
        (dict(render_video=_render()[0], render_mask=_render()[1], point_cloud=torch.rand(10, 3)), ValueError,
         "point_cloud"),
        (dict(render_video=_render()[0], render_mask=_render()[1], use_geometric_memory=False), ValueError,
         "use_geometric_memory"),
        (dict(render_video="/nonexistent/render.mp4", render_mask=_render()[1]), FileNotFoundError, "render_video"),
        (dict(render_video=[1, 2], render_mask=_render()[1]), TypeError, "render_video"),
        (dict(reference_images=torch.rand(2, 3, H, W)), ValueError, "reference_w2c"),
        (dict(reference_images=torch.rand(2, 3, H, W), reference_w2c=torch.eye(4).repeat(2, 1, 1)), ValueError,
         "ref_index"),
        (dict(reference_images=torch.rand(1, 3, H, W), reference_w2c=torch.eye(4)[None], ref_index=[N - 1]),
         ValueError, "ref_index"),
        (dict(reference_images=torch.rand(1, 3, H, W), reference_w2c=torch.eye(4)[None], ref_index=[0.0]),
         TypeError, "ref_index"),
        (dict(reference_images=torch.rand(2, 3, H, W), reference_w2c=torch.eye(4)[None], ref_index=[0, 1]),
         ValueError, "reference_w2c"),
        (dict(reference_w2c=torch.eye(4)[None]), ValueError, "reference_w2c"),
        (dict(latents=torch.randn(1, 16, N, H // 8 + 1, W // 8)), ValueError, "latents"),
        (dict(latents=torch.full((1, 16, N, H // 8, W // 8), float("nan"))), ValueError, "latents"),
    ],
)
def test_bad_given_inputs_fail_before_model_work(memory_model, kwargs, exc, match):
    with _Recorder(memory_model) as rec:
        with pytest.raises(exc, match=match):
            generate_video(**_args(memory_model, **kwargs))
    assert rec.calls == []


def test_camera_variant_refuses_references(camera_model):
    with _Recorder(camera_model) as rec:
        with pytest.raises(ValueError, match="reference_images.*camera"):
            generate_video(**_args(camera_model, reference_images=torch.rand(1, 3, H, W),
                                   reference_w2c=torch.eye(4)[None]))
    assert rec.calls == []
