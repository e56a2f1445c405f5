"""worldstereo.testing: tiny random models, offline tokenizer, save_tiny_model."""

import pytest
import torch

from worldstereo.models.worldstereo import WorldStereo
from worldstereo.testing import (
    TINY_TRANSFORMER_CONFIG,
    save_tiny_model,
    tiny_image_encoder,
    tiny_model,
    tiny_tokenizer,
    tiny_vdm_config,
)


def test_tiny_model_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_model("worldstereo-camera", seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG state untouched
    b = tiny_model("worldstereo-camera", seed=0)
    c = tiny_model("worldstereo-camera", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["transformer.blocks.0.attn1.to_q.weight"],
                           sc["transformer.blocks.0.attn1.to_q.weight"])
    assert not torch.equal(sa["vae.encoder.conv_in.weight"], sc["vae.encoder.conv_in.weight"])


def test_tiny_components_match_the_transformer():
    cfg = tiny_vdm_config("worldstereo-memory")
    assert cfg["text_encoder"]["d_model"] == TINY_TRANSFORMER_CONFIG["text_dim"]
    assert cfg["image_encoder"]["hidden_size"] == TINY_TRANSFORMER_CONFIG["image_dim"]
    assert cfg["controlnet_cfg"]["update_ref"] is False and cfg["controlnet_cfg"]["main_camera_embedding"]
    assert "update_ref" not in tiny_vdm_config("worldstereo-camera")["controlnet_cfg"]
    assert tiny_vdm_config("worldstereo-memory-dmd")["dmd_steps"] == 4
    enc = tiny_image_encoder()
    with torch.no_grad():
        hs = enc(pixel_values=torch.zeros(1, 3, 32, 32), output_hidden_states=True).hidden_states
    assert hs[-2].shape == (1, 17, TINY_TRANSFORMER_CONFIG["image_dim"])
    with pytest.raises(ValueError, match="variant"):
        tiny_vdm_config("worldstereo")
    with pytest.raises(ValueError, match="variant"):
        tiny_model("camera")


def test_tiny_tokenizer_is_t5_like():
    tok = tiny_tokenizer()
    ids = tok("A Camera, moving forward!").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.convert_ids_to_tokens(ids) == ["a", "camera", "<unk>", "moving", "forward", "<unk>", "</s>"]
    assert tok.model_max_length == 512
    padded = tok(["sky"], padding="max_length", max_length=6).input_ids[0]
    assert padded == [tok.convert_tokens_to_ids("sky"), 1, 0, 0, 0, 0]


def test_save_tiny_model_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny_model(tmp_path / "tiny", "worldstereo-memory-dmd", seed=3)
    model = WorldStereo.from_pretrained(folder, local_files_only=True)
    ref = tiny_model("worldstereo-memory-dmd", seed=3)
    assert model.variant == "worldstereo-memory-dmd"
    sm, sr = model.state_dict(), ref.state_dict()
    assert sm.keys() == sr.keys() and all(torch.equal(sm[k], sr[k]) for k in sm)
