"""diffusers' own machinery on the WorldStereo transformer and its ControlNet (ModelMixin/ConfigMixin).

Each test applies a diffusers feature unchanged and checks the output against the plain model:
exact where the feature is lossless (serialization, group offloading, regional compilation, caching
that recomputes), bounded where it is lossy (fp8 storage, torchao weight-only quantization).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from diffusers import FirstBlockCacheConfig
from diffusers.configuration_utils import FrozenDict
from safetensors.torch import load_file, save_file

from worldstereo.models.checkpoint import CheckpointError, parameter_dtype, save_transformer
from worldstereo.models.config import WorldStereoConfig
from worldstereo.models.controlnet import WanXControlNet
from worldstereo.models.transformer import WorldStereoTransformer

from ._tiny import config_dict, inputs, randomize_, tiny_config

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
MODEL_TYPES = ["worldstereo-camera", "worldstereo-memory"]


def _model(model_type: str = "worldstereo-memory", seed: int = 3, **cn) -> WorldStereoTransformer:
    return randomize_(WorldStereoTransformer(tiny_config(model_type, **cn)), seed=seed).eval()


def _run(model, model_type: str = "worldstereo-memory") -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model_type)).sample


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


# ------------------------------------------------------------------ config and serialization
def test_registered_config_is_the_reference_schema():
    model = _model()
    assert isinstance(model.config, FrozenDict)
    assert model.config.model_type == "worldstereo-memory"
    assert model.config.controlnet_cfg["update_ref"] is True
    assert isinstance(model.worldstereo_config, WorldStereoConfig)
    ref = config_dict("worldstereo-memory")
    assert {k: v for k, v in model.config.items() if not k.startswith("_")} == \
        WorldStereoConfig.from_dict(ref).to_dict()
    # diffusers' from_config with the reference keys builds the same architecture
    again = WorldStereoTransformer.from_config(dict(model.config))
    assert list(again.state_dict()) == list(model.state_dict())
    with pytest.raises(ValueError, match="model_type"):
        WorldStereoTransformer.from_config({**ref, "model_type": "worldstereo-tiny"})


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_save_pretrained_from_pretrained_round_trip_is_bit_exact(model_type, tmp_path):
    model = _model(model_type)
    model.save_pretrained(tmp_path / "f32")
    cfg = json.loads((tmp_path / "f32" / "config.json").read_text())
    assert cfg["_class_name"] == "WorldStereoTransformer" and cfg["model_type"] == model_type
    loaded = WorldStereoTransformer.from_pretrained(tmp_path / "f32")
    assert _same_state(model, loaded) and torch.equal(_run(loaded, model_type), _run(model, model_type))
    # half precision with the reference dtype policy (keep-fp32 modules, ControlNet, camera MLP)
    half = _model(model_type)
    with torch.no_grad():
        for name, p in half.named_parameters():
            p.data = p.data.to(parameter_dtype(name, torch.bfloat16))
    half.save_pretrained(tmp_path / "bf16")
    loaded = WorldStereoTransformer.from_pretrained(tmp_path / "bf16", torch_dtype=torch.bfloat16)
    assert _same_state(half, loaded)
    assert loaded.controlnet.proj_out[0].weight.dtype == torch.float32
    assert loaded.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert loaded.blocks[0].scale_shift_table.dtype == torch.float32
    # our reference loader reads diffusers' folder too
    assert _same_state(model, WorldStereoTransformer.from_reference_dir(tmp_path / "f32"))


def test_from_pretrained_reads_the_reference_layout_and_is_strict(tmp_path):
    model = _model()
    save_transformer(model, tmp_path / "ref")  # config.json (reference schema) + model.safetensors
    loaded = WorldStereoTransformer.from_pretrained(tmp_path / "ref")
    assert _same_state(model, loaded)
    with pytest.raises(TypeError, match="not supported for a reference checkpoint"):
        WorldStereoTransformer.from_pretrained(tmp_path / "ref", device_map="auto")
    # diffusers layout with a missing and an unexpected key
    model.save_pretrained(tmp_path / "bad")
    path = tmp_path / "bad" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(path))
    sd.pop("blocks.0.attn1.to_q.weight")
    sd["blocks.0.attn1.extra"] = torch.zeros(2)
    save_file(sd, str(path))
    with pytest.raises((CheckpointError, ValueError), match="to_q.weight"):
        WorldStereoTransformer.from_pretrained(tmp_path / "bad")


def test_controlnet_is_a_diffusers_model_of_its_own(tmp_path):
    model = _model()
    cn = model.controlnet
    assert isinstance(cn, WanXControlNet) and cn.config.dim == 16 and cn.config.out_dim == 32
    cn.save_pretrained(tmp_path / "cn")
    again = WanXControlNet.from_pretrained(tmp_path / "cn")
    assert _same_state(cn, again)
    assert set(cn.attn_processors) == {f"controlnet_blocks.{i}.self_attn.processor" for i in range(2)}


# ------------------------------------------------------------------ attention backends
def test_set_attention_backend_reaches_every_attention():
    model = _model()
    expected = _run(model)
    procs = list(model.attn_processors.values())
    assert len(procs) == 2 * 2 + 2  # backbone attn1 + attn2 per block, ControlNet self-attention
    model.set_attention_backend("_native_math")
    assert {p._attention_backend.value for p in procs} == {"_native_math"}
    assert model.attention_backend == "_native_math"
    torch.testing.assert_close(_run(model), expected, atol=1e-5, rtol=1e-5)
    model.set_attention_backend("sdpa")  # legacy name of diffusers' "native"
    assert model.attention_backend == "sdpa" and torch.equal(_run(model), expected)
    with pytest.raises(ValueError, match="backend"):
        model.set_attention_backend("flash9")


def test_fused_qkv_projections():
    model = _model()
    expected = _run(model)
    model.fuse_qkv_projections()
    assert hasattr(model.blocks[0].attn1, "to_qkv") and hasattr(model.blocks[0].attn2, "to_kv")
    torch.testing.assert_close(_run(model), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ offloading, casting, compilation, caching
@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
def test_group_offload_hooks_are_exact(offload_type):
    model = _model()
    expected = _run(model)
    model.enable_group_offload(torch.device("cpu"), offload_type=offload_type,
                               num_blocks_per_group=1 if offload_type == "block_level" else None)
    assert hasattr(model.blocks[1], "_diffusers_hook") or offload_type == "leaf_level"
    if offload_type == "block_level":  # the ControlNet is recursed into: one group per ControlNet block
        assert hasattr(model.controlnet.controlnet_blocks[1], "_diffusers_hook")
    assert torch.equal(_run(model), expected)


def test_layerwise_casting_fp8_storage():
    model = _model()
    expected = _run(model)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model.blocks[0].ffn.net[0].proj.weight.dtype == torch.float8_e4m3fn
    assert model.patch_embedding.weight.dtype == torch.float32  # skipped pattern
    assert model.controlnet.controlnet_blocks[0].ffn[0].weight.dtype == torch.float32  # kept-fp32 module
    out = _run(model)
    err = float((out - expected).abs().max() / expected.abs().max())
    assert 0 < err < 0.2


def test_compile_repeated_blocks():
    model = _model()
    expected = _run(model)
    model.compile_repeated_blocks(backend="eager", fullgraph=False)
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in model.blocks)
    assert getattr(model.controlnet.controlnet_blocks[0], "_compiled_call_impl", None) is not None
    assert torch.equal(_run(model), expected)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_first_block_cache_reuses_the_tail_residual(model_type):
    """A second call with identical inputs skips the tail blocks; since the ControlNet residuals are
    added inside the blocks, head output + cached tail residual reproduces the full output."""
    model = _model(model_type)
    expected = _run(model, model_type)
    model.enable_cache(FirstBlockCacheConfig(threshold=0.5))
    calls = []
    hook = model.blocks[-1].ffn.register_forward_hook(lambda *a: calls.append(1))
    with model.cache_context("cond"):
        first = _run(model, model_type)
        second = _run(model, model_type)
    hook.remove()
    assert torch.equal(first, expected)
    assert len(calls) == 1 if model_type == "worldstereo-camera" else len(calls) == 2  # memory: 2 streams per call
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=1e-5)
    model.disable_cache()


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed")
def test_torchao_quantization_config_at_load(tmp_path):
    from diffusers import TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    model = _model()
    expected = _run(model)
    model.save_pretrained(tmp_path / "m")
    q = WorldStereoTransformer.from_pretrained(tmp_path / "m", quantization_config=TorchAoConfig(Int8WeightOnlyConfig()),
                                               torch_dtype=torch.float32)
    assert type(q.blocks[0].attn1.to_q.weight).__name__ not in ("Parameter", "Tensor")
    out = _run(q)
    assert 0 < float((out - expected).abs().max() / expected.abs().max()) < 0.2
