import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.models._tiny import inputs, randomize_, tiny_config
from worldstereo.models.checkpoint import (
    CheckpointError,
    load_state_dict_file,
    load_transformer,
    parameter_dtype,
    read_safetensors,
    save_transformer,
)
from worldstereo.models.transformer import WorldStereoTransformer



@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only in this module (restored afterwards, so other modules keep autograd)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = randomize_(WorldStereoTransformer(tiny_config("worldstereo-memory")), seed=1).eval()
    save_transformer(model, d)
    return d, model


def _case_copy(tmp_path, saved, mutate):
    d, _ = saved
    sd = load_file(str(d / "model.safetensors"))
    mutate(sd)
    out = tmp_path / "case"
    out.mkdir()
    save_file(sd, str(out / "model.safetensors"))
    (out / "config.json").write_text((d / "config.json").read_text())
    return out


def test_round_trip_exact(saved):
    d, model = saved
    loaded = load_transformer(d)
    assert not loaded.training
    ref_sd, new_sd = model.state_dict(), loaded.state_dict()
    assert list(ref_sd) == list(new_sd)
    assert all(torch.equal(ref_sd[k], new_sd[k]) for k in ref_sd)
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    x = inputs("worldstereo-memory")
    torch.testing.assert_close(loaded(**x).sample, model(**x).sample, atol=0, rtol=0)
    # same through the classmethod used by the pipeline
    again = WorldStereoTransformer.from_reference_dir(d)
    torch.testing.assert_close(again(**x).sample, model(**x).sample, atol=0, rtol=0)


def test_missing_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.pop("blocks.1.attn1.to_q.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.attn1\.to_q\.weight \[32, 32\]"):
        load_transformer(case)


def test_unexpected_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.update({"controlnet.extra_layer.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): controlnet\.extra_layer\.weight"):
        load_transformer(case)


def test_misshaped_key_reported(tmp_path, saved):
    case = _case_copy(tmp_path, saved, lambda sd: sd.update({"camera_embedding.0.weight": torch.zeros(16, 6)}))
    with pytest.raises(CheckpointError, match=r"camera_embedding\.0\.weight checkpoint \[16, 6\] vs model \[16, 7\]"):
        load_transformer(case)


def test_all_problems_in_one_error(tmp_path, saved):
    def mutate(sd):
        sd.pop("proj_out.bias")
        sd["bogus"] = torch.zeros(1)
        sd["scale_shift_table"] = torch.zeros(1, 2, 31)

    case = _case_copy(tmp_path, saved, mutate)
    with pytest.raises(CheckpointError) as info:
        load_transformer(case)
    msg = str(info.value)
    assert "proj_out.bias" in msg and "bogus" in msg and "scale_shift_table" in msg


def test_pickle_refused_unless_allowed(tmp_path, saved):
    d, model = saved
    sd = load_file(str(d / "model.safetensors"))
    case = tmp_path / "pickled"
    case.mkdir()
    torch.save(sd, case / "model.bin")
    (case / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(CheckpointError, match="allow_pickle"):
        load_transformer(case)
    with pytest.raises(CheckpointError, match="pickle"):
        load_state_dict_file(case / "model.bin")
    loaded = load_transformer(case, allow_pickle=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())


def test_missing_backbone_config(tmp_path, saved):
    d, model = saved
    raw = json.loads((d / "config.json").read_text())
    backbone = raw.pop("transformer")
    case = tmp_path / "nobackbone"
    case.mkdir()
    (case / "config.json").write_text(json.dumps(raw))
    (case / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="backbone_config"):
        load_transformer(case)
    loaded = load_transformer(case, backbone_config=backbone)
    x = inputs("worldstereo-memory")
    torch.testing.assert_close(loaded(**x).sample, model(**x).sample, atol=0, rtol=0)
    # a local diffusers-style base model directory also works
    base = tmp_path / "base"
    (base / "transformer").mkdir(parents=True)
    (base / "transformer" / "config.json").write_text(json.dumps(dict(backbone, _class_name="WanTransformer3DModel")))
    raw["base_model"] = str(base)
    (case / "config.json").write_text(json.dumps(raw))
    assert load_transformer(case).backbone_config.num_layers == backbone["num_layers"]


def test_dtype_policy_half(saved):
    d, model = saved
    loaded = load_transformer(d, torch_dtype=torch.float16)
    dt = {k: v.dtype for k, v in loaded.state_dict().items()}
    fp32 = ["scale_shift_table", "condition_embedder.time_embedder.linear_1.weight",
            "condition_embedder.time_embedder.linear_2.bias", "condition_embedder.image_embedder.norm1.weight",
            "condition_embedder.image_embedder.norm2.bias", "blocks.0.scale_shift_table", "blocks.1.norm2.weight",
            "controlnet.controlnet_blocks.0.norm1.linear.weight", "controlnet.proj_out.1.weight",
            "camera_embedding.4.weight", "ref_index_embedding.weight"]
    half = ["patch_embedding.weight", "condition_embedder.time_proj.weight", "condition_embedder.text_embedder.linear_1.weight",
            "condition_embedder.image_embedder.ff.net.0.proj.weight", "blocks.0.attn1.to_q.weight",
            "blocks.0.attn2.norm_added_k.weight", "blocks.1.ffn.net.2.weight", "proj_out.weight"]
    assert all(dt[k] == torch.float32 for k in fp32), {k: dt[k] for k in fp32}
    assert all(dt[k] == torch.float16 for k in half), {k: dt[k] for k in half}
    assert loaded.dtype == torch.float16
    # the rule as a function: backbone keep-modules and extras float32, float32/None -> all float32
    assert parameter_dtype("blocks.3.norm2.bias", torch.bfloat16) == torch.float32
    assert parameter_dtype("blocks.3.attn1.norm_q.weight", torch.bfloat16) == torch.bfloat16
    assert parameter_dtype("controlnet.proj_in.weight", torch.bfloat16, keep_extras_fp32=False) == torch.bfloat16
    assert parameter_dtype("blocks.3.attn1.to_q.weight", None) == torch.float32


def test_mixed_precision_forward_close_to_fp32(saved):
    d, model = saved
    loaded = load_transformer(d, torch_dtype=torch.bfloat16)
    x = inputs("worldstereo-memory")
    out = loaded(**x).sample
    ref = model(**x).sample
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.1, err


def test_streaming_reader_matches_safetensors(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2).to(torch.bfloat16), "e": torch.zeros(0, 3)}
    save_file(sd, str(tmp_path / "x.safetensors"))
    got = read_safetensors(tmp_path / "x.safetensors")
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    got16 = read_safetensors(tmp_path / "x.safetensors", dtype_for_key=lambda k: torch.float16)
    assert got16["a"].dtype == torch.float16 and got16["b"].dtype == torch.int64
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="header"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_unknown_format_refused(tmp_path):
    p = tmp_path / "weights.npz"
    p.write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unsupported"):
        load_state_dict_file(p)


def _split_checkpoint(tmp_path, saved, backbone_prefixes=("blocks.", "patch_embedding.", "condition_embedder.")):
    """A reference-style checkpoint folder without (part of) the backbone, and a diffusers-style base
    transformer folder holding it; config.json names the base as base_model."""
    d, _ = saved
    full = load_file(str(d / "model.safetensors"))
    ckpt = {k: v for k, v in full.items() if not k.startswith(backbone_prefixes)}
    base = {k: v for k, v in full.items() if k.startswith(backbone_prefixes)}
    case = tmp_path / "ckpt"
    case.mkdir()
    (tmp_path / "base" / "transformer").mkdir(parents=True)
    save_file(ckpt, str(case / "model.safetensors"))
    save_file(base, str(tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["base_model"] = str(tmp_path / "base")
    (case / "config.json").write_text(json.dumps(cfg))
    return case, full, base


def test_weights_missing_from_the_checkpoint_come_from_the_base_transformer(tmp_path, saved):
    case, full, base = _split_checkpoint(tmp_path, saved)
    assert base and len(base) < len(full)
    loaded = load_transformer(case)
    sd = loaded.state_dict()
    assert set(sd) == set(full) and all(torch.equal(sd[k], full[k]) for k in full)
    # checkpoint keys win over the base (the reference loads the checkpoint on top of the base)
    key = next(iter(base))
    changed = dict(load_file(str(case / "model.safetensors")), **{key: full[key] + 1.0})
    save_file(changed, str(case / "model.safetensors"))
    assert torch.equal(load_transformer(case).state_dict()[key], full[key] + 1.0)


def test_base_transformer_does_not_hide_missing_or_extra_keys(tmp_path, saved):
    case, full, base = _split_checkpoint(tmp_path, saved)
    base_file = tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors"
    lost = "blocks.0.ffn.net.0.proj.weight"
    save_file({k: v for k, v in base.items() if k != lost}, str(base_file))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.0\.ffn\.net\.0\.proj\.weight"):
        load_transformer(case)
    save_file({**base, "blocks.0.unknown.weight": torch.zeros(3)}, str(base_file))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): blocks\.0\.unknown\.weight"):
        load_transformer(case)
    # without a base folder the backbone keys are reported missing
    with pytest.raises(FileNotFoundError, match="base_transformer"):
        load_transformer(case, base_transformer=tmp_path / "nowhere")
    cfg = json.loads((case / "config.json").read_text())
    cfg["base_model"] = str(tmp_path / "no-such-base")
    (case / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_transformer(case)
