"""Memory tiers (worldstereo.optimization.enable_memory_tier / suggest_memory_tier, worldstereo.vram).

Tiers the CPU can run (resident, fp8 layerwise casting, torchao int8 / float8) run a tiny generation;
tiers that need an accelerator are exercised through their hooks' placement logic on the CPU (group
offloading with ``onload_device="cpu"`` and no streams, model offload with a faked accelerator) and
must refuse clearly when called without one.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from diffusers.hooks import HookRegistry

import worldstereo.optimization as opt
from worldstereo import vram
from worldstereo.camera import CameraTrajectory
from worldstereo.optimization import (
    MEMORY_TIERS,
    enable_memory_tier,
    execution_device,
    get_memory_tier,
    suggest_memory_tier,
)
from worldstereo.pipeline import generate_video
from worldstereo.testing import tiny_model

from .models._tiny import randomize_

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
H = W = 32


def _model(variant: str = "worldstereo-memory"):
    model = tiny_model(variant)
    randomize_(model.transformer, seed=1)  # every path (ControlNet, camera tokens) contributes
    return model


def _forward(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    B, F, h, w, R = 1, 3, 4, 6, 2
    x = dict(hidden_states=torch.randn(B, 36, F, h, w, generator=g), timestep=torch.tensor([900.0]),
             encoder_hidden_states=model.encode_prompt("a room with a window"),
             encoder_hidden_states_image=torch.randn(B, 17, 20, generator=g),
             render_latent=torch.randn(B, 16, F, h, w, generator=g),
             render_mask=torch.rand(B, 1, F, 8 * h, 8 * w, generator=g).gt(0.5).float(),
             camera_embedding=torch.randn(B, 6, F, 8 * h, 8 * w, generator=g),
             reference_latent=torch.randn(B, 36, R, h, w, generator=g), ref_index=torch.tensor([0, 1]),
             camera_qt=torch.randn(B, F, 7, generator=g), camera_qt_ref=torch.randn(B, R, 7, generator=g))
    with torch.no_grad():
        return model.transformer(**x).sample.float()


def _generate(model) -> torch.Tensor:
    traj = CameraTrajectory.forward(distance=0.3, num_frames=4, height=H, width=W)
    g = torch.Generator().manual_seed(3)
    return generate_video(model, torch.rand(3, H, W, generator=g), traj, num_frames=4, height=H, width=W,
                          num_inference_steps=2, depth_estimator=torch.full((H, W), 2.0), seed=0)


@pytest.fixture(scope="module")
def reference():
    model = _model()
    return _forward(model), _generate(model)


@pytest.fixture
def fake_accelerator(monkeypatch):
    monkeypatch.setattr(opt, "_accelerator_available", lambda: True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------ names and errors
def test_tier_names_and_lookup():
    assert MEMORY_TIERS[0] == "resident" and len(set(MEMORY_TIERS)) == len(MEMORY_TIERS)
    assert {"model_offload", "group_offload", "group_offload_leaf", "group_offload_disk", "fp8", "int8",
            "float8", "fp8_group_offload"} <= set(MEMORY_TIERS)
    assert not get_memory_tier("group_offload").lossy and get_memory_tier("fp8").lossy
    assert get_memory_tier("int8").needs_torchao and not get_memory_tier("resident").needs_accelerator
    with pytest.raises(ValueError, match="tier: expected one of"):
        get_memory_tier("tiny")


def test_bad_requests_fail_before_touching_the_model(monkeypatch):
    model = _model()
    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    with pytest.raises(ValueError, match="tier"):
        enable_memory_tier(model, "huge")
    with pytest.raises(TypeError, match="WorldStereo"):
        enable_memory_tier(torch.nn.Linear(2, 2), "resident")
    monkeypatch.setattr(opt, "_accelerator_available", lambda: False)
    for tier in ("model_offload", "group_offload", "group_offload_leaf", "fp8_group_offload"):
        with pytest.raises(RuntimeError, match="needs a CUDA, XPU or MPS accelerator"):
            enable_memory_tier(model, tier)
    monkeypatch.setattr(opt, "_accelerator_available", lambda: True)
    with pytest.raises(RuntimeError, match="CUDA/XPU streams"):
        enable_memory_tier(model, "group_offload", device="cpu")
    monkeypatch.setattr(opt.importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else object())
    with pytest.raises(ImportError, match=r"worldstereo\[quantization\]"):
        enable_memory_tier(model, "int8", device="cpu")
    after = model.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert not hasattr(model, "_worldstereo_memory_tier")


def test_one_tier_per_model():
    model = _model()
    enable_memory_tier(model, "resident", device="cpu")
    with pytest.raises(RuntimeError, match="already applied"):
        enable_memory_tier(model, "fp8", device="cpu")


# ------------------------------------------------------------------ tiers the CPU runs
def test_resident_is_exact(reference):
    model = _model()
    handle = enable_memory_tier(model, "resident", device="cpu")
    assert handle.execution_device == torch.device("cpu") == execution_device(model)
    assert torch.equal(_forward(model), reference[0])
    assert torch.equal(_generate(model), reference[1])


def test_fp8_layerwise_stores_float8_and_stays_close(reference):
    model = _model()
    enable_memory_tier(model, "fp8", device="cpu")
    tr = model.transformer
    assert tr.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert tr.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    assert tr.controlnet.controlnet_blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    # precision-critical modules are not cast: patch embedding, norms, time embedder, output heads
    # (diffusers' default pattern "^proj_out$" also keeps the ControlNet's proj_out list in bf16)
    assert tr.controlnet.proj_out[0].weight.dtype == torch.bfloat16
    assert tr.patch_embedding.weight.dtype == torch.bfloat16 and tr.proj_out.weight.dtype == torch.bfloat16
    assert tr.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert tr.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16
    out = _forward(model)
    assert torch.isfinite(out).all() and 0 < _rel(out, reference[0]) < 0.2
    video = _generate(model)
    assert video.shape == reference[1].shape and torch.isfinite(video).all()


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed")
@pytest.mark.parametrize("tier", ["int8", "float8"])
def test_torchao_weight_only_quantizes_transformer_and_text_encoder(tier, reference):
    model = _model()
    enable_memory_tier(model, tier, device="cpu")
    tr = model.transformer
    kind = type(tr.blocks[0].attn1.to_q.weight).__name__
    assert kind != "Parameter" and kind != "Tensor", kind  # a torchao quantized tensor subclass
    assert type(tr.controlnet.controlnet_blocks[0].ffn[0].weight).__name__ == kind
    assert type(model.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight).__name__ == kind
    assert type(tr.proj_out.weight).__name__ in ("Parameter", "Tensor")  # precision-critical: not quantized
    out = _forward(model)
    assert torch.isfinite(out).all() and 0 < _rel(out, reference[0]) < 0.2
    assert torch.isfinite(_generate(model)).all()


# ------------------------------------------------------------------ tiers that need an accelerator
def _group_hooks(module) -> bool:
    reg = getattr(module, "_diffusers_hook", None)
    return reg is not None and any("group_offloading" in n for n in reg.hooks)


@pytest.mark.parametrize("tier", ["group_offload", "group_offload_leaf", "group_offload_disk", "fp8_group_offload"])
def test_group_offload_placement_on_cpu(tier, reference, tmp_path):
    """The tiers' diffusers group-offloading hooks, run with the CPU as onload device (no streams)."""
    model = _model()
    t = get_memory_tier(tier)
    handle = opt._apply_tier(model, t, torch.device("cpu"), use_stream=False,
                             offload_dir=tmp_path if t.placement == "group_block_disk" else None)
    tr = model.transformer
    if t.placement == "group_leaf":
        assert _group_hooks(tr.blocks[0].attn1.to_q) and _group_hooks(tr.controlnet.proj_out[0])
        assert _group_hooks(model.text_encoder.shared)
    else:  # one group per backbone block, per ControlNet block (recursed) and per T5 block
        assert all(_group_hooks(b) for b in tr.blocks) and all(_group_hooks(b) for b in tr.controlnet.controlnet_blocks)
        assert all(_group_hooks(b) for b in model.text_encoder.encoder.block)
        assert not _group_hooks(tr.blocks[0].attn1.to_q)
    assert any(_group_hooks(m) for m in model.image_encoder.modules())
    assert not hasattr(model.vae, "_diffusers_hook")  # VAE stays resident
    assert "group offload" in handle.placements["transformer"] and execution_device(model).type == "cpu"
    out = _forward(model)
    if t.lossy:
        assert 0 < _rel(out, reference[0]) < 0.2
    else:
        assert torch.equal(out, reference[0])
        assert torch.equal(_generate(model), reference[1])
    if t.placement == "group_block_disk":
        assert any(tmp_path.iterdir())  # offloaded groups written there


@pytest.mark.parametrize("tier", ["model_offload", "fp8_model_offload"])
def test_model_offload_tiers(tier, reference, fake_accelerator):
    model = _model()
    handle = enable_memory_tier(model, tier, device="cpu")
    assert handle.offload is not None and handle.offload.keep_outer_resident
    assert set(handle.offload.components) == {"text_encoder", "image_encoder", "vae", "transformer", "controlnet"}
    assert execution_device(model) == torch.device("cpu")
    out = _forward(model)
    if get_memory_tier(tier).lossy:
        assert 0 < _rel(out, reference[0]) < 0.2
    else:
        assert torch.equal(out, reference[0])
    assert ("load", "controlnet") in handle.offload.history
    reg = HookRegistry.check_if_exists_or_initialize(model.transformer)
    assert opt._HOOK_NAME in reg.hooks


# ------------------------------------------------------------------ estimates and suggestions
def test_parameter_counts_match_the_model():
    model = _model()
    c = vram.parameter_counts_of(model)
    assert c.transformer == sum(p.numel() for p in model.transformer.parameters())
    assert c.text_encoder == sum(p.numel() for p in model.text_encoder.parameters())
    assert c.num_blocks == len(model.transformer.blocks) and c.controlnet_layers == 2
    release = vram.release_parameter_counts("worldstereo-camera")
    # Wan2.1-I2V-14B: 40 blocks of 10·D² + 2·D·ffn (+ biases and norms), D = 5120, ffn = 13824
    D, ffn = 5120, 13824
    per_block = 10 * D * D + 2 * D * ffn
    assert abs(release.backbone_blocks / 40 - per_block) / per_block < 1e-3
    assert 16.0e9 < release.backbone_blocks + release.backbone_other < 16.6e9


def test_estimates_order_and_scale():
    est = {t: vram.estimate_peak_vram_gb(t, "worldstereo-memory") for t in MEMORY_TIERS}
    assert est["resident"] > est["model_offload"] > est["group_offload"] > est["group_offload_leaf"]
    assert est["fp8"] < est["resident"] and est["fp8_group_offload"] < est["group_offload"]
    # resident holds at least the bf16 backbone, fp32 UMT5 and CLIP
    assert est["resident"] > (16.0e9 * 2 + 5.68e9 * 4 + 0.63e9 * 4) / 1e9
    cam = vram.estimate_peak_vram_gb("group_offload", "worldstereo-camera")
    assert cam < est["group_offload"]  # no reference tokens
    small = vram.estimate_peak_vram_gb("group_offload", "worldstereo-memory", height=240, width=416)
    assert small < est["group_offload"]
    with pytest.raises(ValueError, match="multiples of 16"):
        vram.estimate_peak_vram_gb("resident", height=100)


def test_suggest_memory_tier():
    assert suggest_memory_tier(200, "worldstereo-memory") == "resident"
    for gb in (80, 48, 24, 20, 16):
        for variant in ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd"):
            name = suggest_memory_tier(gb, variant)
            assert vram.estimate_peak_vram_gb(name, variant) <= gb
    assert not get_memory_tier(suggest_memory_tier(16, "worldstereo-memory", allow_lossy=False)).lossy
    with pytest.raises(ValueError, match="no memory tier fits 4 GB"):
        suggest_memory_tier(4, "worldstereo-memory")
    for bad in (0, -3, "24", True):
        with pytest.raises(ValueError, match="gpu_memory_gb"):
            suggest_memory_tier(bad)


# ------------------------------------------------------------------ WorldStereoPipeline(memory_tier=...)
def test_pipeline_memory_tier(tmp_path):
    from worldstereo.pipeline import WorldStereoPipeline
    from worldstereo.testing import save_tiny_model

    folder = save_tiny_model(tmp_path / "model", "worldstereo-camera")
    for tier, match in (("group_offload", "needs an accelerator"), ("auto", "CUDA device"), ("nope", "tier")):
        with pytest.raises(ValueError, match=match):
            WorldStereoPipeline(str(folder), device="cpu", torch_dtype=torch.float32, enable_xformers=False,
                                memory_tier=tier)
    with pytest.raises(ValueError, match="enable_cpu_offload"):
        WorldStereoPipeline(str(folder), device="cpu", torch_dtype=torch.float32, enable_xformers=False,
                            enable_cpu_offload=True, memory_tier="resident")
    pipe = WorldStereoPipeline(str(folder), device="cpu", torch_dtype=torch.float32, enable_xformers=False,
                               memory_tier="fp8")
    assert pipe.memory_tier == "fp8" and pipe.model.transformer.dtype == torch.bfloat16
    assert pipe.model.transformer.blocks[0].attn1.to_k.weight.dtype == torch.float8_e4m3fn
