"""Conditioning encoders (worldstereo.models.conditioning) with tiny random components."""

import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.models.conditioning import (
    clip_pixel_values,
    encode_image_clip,
    encode_prompt,
    prepare_image_condition,
    prepare_reference_latent,
    prompt_clean,
)
from worldstereo.models.vae import keyframe_encode, video_encode
from worldstereo.testing import (
    tiny_image_encoder,
    tiny_image_processor,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_vae,
)


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0)


def test_prompt_clean():
    assert prompt_clean("  a   camera\n\tmoving  ") == "a camera moving"
    # double html unescape: "&amp;lt;" -> "&lt;" -> "<"
    assert prompt_clean("a &amp;lt;b&amp;gt; c") == "a <b> c"
    with pytest.raises(TypeError, match="text"):
        prompt_clean(3)


def test_prompt_clean_repairs_mojibake_like_the_reference():
    """ftfy is always applied (it is a dependency): the UTF-8 em dash read as cp1252 ("â€”") is
    repaired, and ftfy's own HTML unescaping plus the double ``html.unescape`` reduce a
    triple-escaped ampersand to "&" (the probe prompt of the pipeline conformance cases)."""
    probe = "the garden at night \u00e2\u20ac\u201d red car &amp;amp;amp; on the road"
    assert prompt_clean(probe) == "the garden at night \u2014 red car & on the road"
    # without ftfy's step the em dash would stay broken and one "&amp;" would survive
    assert prompt_clean("caf\u00c3\u00a9") == "caf\u00e9"


def test_encode_prompt_zeroes_padding():
    tok, te = tiny_tokenizer(), tiny_text_encoder(seed=0)
    prompts = ["a camera moving forward in the garden", "sky"]
    out = encode_prompt(tok, te, prompts, max_length=16)
    assert out.shape == (2, 16, 24)
    lens = [len(tok(p).input_ids) for p in prompts]
    assert lens == [8, 2]  # words + </s>
    for b, n in enumerate(lens):
        assert torch.count_nonzero(out[b, n:]) == 0
        assert (out[b, :n].abs().sum(-1) > 0).all()
    # valid rows equal the encoder's own output (attention-masked), independent of batching
    ids = tok(prompts[1:], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        ref = te(ids.input_ids, ids.attention_mask).last_hidden_state
    assert torch.allclose(out[1, :2], ref[0, :2], atol=1e-5)
    # default length 512 and the str form
    assert encode_prompt(tok, te, "trees", dtype=torch.float64).shape == (1, 512, 24)
    with pytest.raises(TypeError, match="prompts"):
        encode_prompt(tok, te, [1, 2])


def test_clip_quirk_switch():
    proc = tiny_image_processor()
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    pil = Image.fromarray(arr)
    quirk = clip_pixel_values(proc, pil, reference_quirk=True)
    correct = clip_pixel_values(proc, pil, reference_quirk=False)
    assert quirk.shape == correct.shape == (1, 3, 32, 32)
    # quirk: 0..255 values normalised with the [0,1] mean/std -> v_q = (255 x - m)/s while
    # correct: v_c = (x - m)/s; hence v_q = 255 v_c + 254 m / s exactly (up to float rounding)
    mean = torch.tensor(proc.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
    assert torch.allclose(quirk, 255 * correct + 254 * mean / std, atol=2e-3)
    assert correct.min() > -2 and correct.max() < 2.2 and quirk.max() > 100
    # tensor input in [0, 1]: the quirk path quantises to uint8 like the reference's PIL image
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert torch.allclose(clip_pixel_values(proc, t, True), quirk, atol=1e-4)
    assert torch.allclose(clip_pixel_values(proc, t[None], False), correct, atol=0.02)
    with pytest.raises(ValueError, match="images"):
        clip_pixel_values(proc, torch.rand(2, 4, 8, 8))


def test_encode_image_clip_is_penultimate_hidden_state():
    proc, enc = tiny_image_processor(), tiny_image_encoder(seed=0)
    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    out = encode_image_clip(proc, enc, images)
    assert out.shape == (2, 17, 20)  # (32/8)^2 + 1 tokens, hidden 20
    pv = clip_pixel_values(proc, images, True)
    with torch.no_grad():
        hs = enc(pixel_values=pv, output_hidden_states=True).hidden_states
    assert torch.allclose(out, hs[-2]) and not torch.allclose(out, hs[-1])
    assert not torch.allclose(encode_image_clip(proc, enc, images, reference_quirk=False), out)


def test_prepare_image_condition_first_frame_only(vae):
    image = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    cond = prepare_image_condition(vae, image, 4, "first_frame_only")
    assert cond.shape == (2, 20, 4, 2, 3)
    mask = cond[:, :4]
    assert torch.equal(mask[:, :, 0], torch.ones_like(mask[:, :, 0]))
    assert torch.count_nonzero(mask[:, :, 1:]) == 0
    assert torch.allclose(cond[:, 4:, :1], keyframe_encode(vae, image[:, :, None]))
    black = keyframe_encode(vae, torch.zeros(2, 3, 1, 16, 24))
    for f in range(1, 4):
        assert torch.allclose(cond[:, 4:, f:f + 1], black)
    assert prepare_image_condition(vae, image, 1).shape == (2, 20, 1, 2, 3)


def test_prepare_image_condition_full_vae(vae):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    cond = prepare_image_condition(vae, image, 3, "full_vae")
    assert cond.shape == (1, 20, 3, 2, 2)
    video = torch.cat([image[:, :, None], torch.zeros(1, 3, 8, 16, 16)], dim=2)  # 4*(3-1)+1 frames
    assert torch.allclose(cond[:, 4:], video_encode(vae, video), atol=1e-6)
    assert torch.equal(cond[:, :4, 0], torch.ones(1, 4, 2, 2))
    assert torch.count_nonzero(cond[:, :4, 1:]) == 0
    with pytest.raises(ValueError, match="mode"):
        prepare_image_condition(vae, image, 3, "bogus")
    with pytest.raises(ValueError, match="num_latent_frames"):
        prepare_image_condition(vae, image, 0)
    with pytest.raises(ValueError, match="image"):
        prepare_image_condition(vae, image[0], 3)


def test_prepare_reference_latent():
    z = torch.randn(1, 16, 2, 3, 4)
    r = prepare_reference_latent(z)
    assert r.shape == (1, 36, 2, 3, 4)
    assert torch.equal(r[:, :16], z) and torch.equal(r[:, 20:], z)
    assert torch.equal(r[:, 16:20], torch.ones(1, 4, 2, 3, 4))
    with pytest.raises(ValueError, match="z"):
        prepare_reference_latent(torch.zeros(16, 2, 3, 4))
