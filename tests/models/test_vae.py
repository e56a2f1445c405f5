"""Keyframe VAE codec (worldstereo.models.vae) with a tiny random AutoencoderKLWan."""

import pytest
import torch

from worldstereo.models.vae import (
    denormalize_latents,
    keyframe_decode,
    keyframe_encode,
    latent_stats,
    normalize_latents,
    video_encode,
)
from worldstereo.testing import tiny_vae


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0)


def _video(b=2, f=3, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g) * 2 - 1


def test_latent_stats_come_from_config(vae):
    mean, std = latent_stats(vae)
    assert mean.shape == std.shape == (1, 16, 1, 1, 1)
    assert torch.equal(mean.flatten(), torch.tensor(vae.config.latents_mean, dtype=torch.float32))
    assert torch.equal(std.flatten(), torch.tensor(vae.config.latents_std, dtype=torch.float32))


def test_normalise_denormalise_round_trip(vae):
    z = torch.randn(2, 16, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    n = normalize_latents(vae, z)
    mean, std = latent_stats(vae)
    # independent truth: per-channel affine map
    c = 5
    assert torch.allclose(n[:, c], (z[:, c] - vae.config.latents_mean[c]) / vae.config.latents_std[c])
    assert torch.allclose(denormalize_latents(vae, n), z, atol=1e-6)


def test_keyframe_encode_equals_per_frame_mode(vae):
    video = _video()
    z = keyframe_encode(vae, video)
    assert z.shape == (2, 16, 3, 2, 3) and z.dtype == torch.float32
    mean, std = latent_stats(vae)
    with torch.no_grad():
        for i in range(video.shape[2]):
            raw = vae.encode(video[:, :, i:i + 1]).latent_dist.mode()
            assert torch.allclose(z[:, :, i:i + 1], (raw - mean) / std, atol=1e-6)


def test_frames_are_independent(vae):
    video = _video()
    z = keyframe_encode(vae, video)
    # changing one frame changes only that latent frame
    video2 = video.clone()
    video2[:, :, 1] = -video2[:, :, 1]
    z2 = keyframe_encode(vae, video2)
    assert torch.equal(z[:, :, [0, 2]], z2[:, :, [0, 2]])
    assert not torch.allclose(z[:, :, 1], z2[:, :, 1])
    # encoding each frame as its own video gives the same latents
    single = torch.cat([keyframe_encode(vae, video[:, :, i:i + 1]) for i in range(3)], dim=2)
    assert torch.equal(single, z)
    # folding frames into the batch dimension is the same computation
    assert torch.allclose(keyframe_encode(vae, video, frames_per_batch=3), z, atol=1e-5)
    # a causal (temporally compressed) encode is different: frames are not independent there
    assert video_encode(vae, _video(b=1, f=5)).shape == (1, 16, 2, 2, 3)


def test_keyframe_decode_shapes_range_and_consistency(vae):
    latents = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(2)) * 3
    frames = keyframe_decode(vae, latents)
    assert frames.shape == (1, 3, 2, 16, 24) and frames.dtype == torch.float32
    assert frames.min() >= -1 and frames.max() <= 1
    # decode = de-normalise, decode each frame alone with the VAE, clip
    mean, std = latent_stats(vae)
    with torch.no_grad():
        raw = vae.decode((latents[:, :, 1:2] * std + mean)).sample.clamp(-1, 1)
    assert torch.allclose(frames[:, :, 1:2], raw, atol=1e-6)
    assert torch.allclose(keyframe_decode(vae, latents, frames_per_batch=2), frames, atol=1e-5)


def test_bad_inputs(vae):
    with pytest.raises(ValueError, match="video"):
        keyframe_encode(vae, torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        keyframe_encode(vae, torch.zeros(1, 3, 1, 12, 16))
    with pytest.raises(ValueError, match="latents"):
        keyframe_decode(vae, torch.zeros(1, 4, 1, 2, 2))
    with pytest.raises(ValueError, match="frames_per_batch"):
        keyframe_encode(vae, torch.zeros(1, 3, 1, 16, 16), frames_per_batch=0)
