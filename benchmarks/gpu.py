"""Speed and peak VRAM of the full-size WorldStereo model per memory tier, on a CUDA GPU.

Builds the full-size transformer of the variants (Wan2.1-I2V-14B backbone + the ControlNet of
:data:`worldstereo.vram.ASSUMED_CONTROLNET`, or ``--controlnet-config``) with random weights: built on
the meta device, materialised directly on the GPU and initialised there with a cheap normal draw
(no download, no CPU initialisation). For each requested memory tier it times transformer forwards
at 480×832 with 21 keyframes (the memory variants with 8 references) and records the peak VRAM of
the forward (``torch.cuda.max_memory_allocated``). The text encoder (UMT5-XXL), CLIP and VAE are
built at full size once and timed (2 prompts, 1 image, keyframe VAE encode of 21 + 1 + R frames and
decode of 21). Per video it extrapolates::

    UniPC (camera / memory): 40 steps × 2 forwards (CFG) × t_forward + t_encoders
    DMD (memory-dmd):         4 steps × 1 forward × t_forward(memory) + t_encoders

(the DMD and memory transformers are the same architecture). With several GPUs visible it also
measures Ulysses context parallelism over all of them (``--cp`` processes, NCCL) and prints the
speed-up of one forward against one GPU.

Budget: the default run (memory variant: resident, fp8, int8, group_offload; camera: resident; one
timed forward after a warm-up each) is sized to finish in under 8 minutes on one H100-class GPU;
``--repeats``/``--tiers``/``--variants`` trade time for coverage.

``--dry-run`` runs the same logic at tiny size on the CPU (group offloading without streams, CP with
two gloo processes) to check the script without a GPU; its numbers mean nothing.

Usage::

    python benchmarks/gpu.py                      # one GPU, default tiers
    python benchmarks/gpu.py --tiers resident group_offload group_offload_leaf --repeats 2
    python benchmarks/gpu.py --dry-run            # CPU, tiny: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("worldstereo-camera", "worldstereo-memory")
DEFAULT_TIERS = {"worldstereo-camera": ["resident"],
                 "worldstereo-memory": ["resident", "fp8", "int8", "group_offload"]}
UNIPC_STEPS, DMD_STEPS = 40, 4
FULL = dict(height=480, width=832, frames=21, references=8)
TINY = dict(height=32, width=48, frames=4, references=2)


@dataclasses.dataclass
class Measurement:
    variant: str
    tier: str
    seconds_per_forward: float
    peak_gb: float | None
    note: str = ""


# ------------------------------------------------------------------------------------------ models
def transformer_config(variant: str, tiny: bool, controlnet: dict | None) -> dict:
    from worldstereo.models.config import WanBackboneConfig
    from worldstereo.vram import ASSUMED_CONTROLNET

    if tiny:
        from worldstereo.testing import TINY_CONTROLNET_CONFIG, TINY_TRANSFORMER_CONFIG

        backbone, cn = dict(TINY_TRANSFORMER_CONFIG), dict(TINY_CONTROLNET_CONFIG)
    else:
        backbone, cn = WanBackboneConfig().to_dict(), dict(controlnet or ASSUMED_CONTROLNET)
    if variant != "worldstereo-camera":
        cn.update(update_ref=True, main_camera_embedding=True, camera_embedding_dim=7, ref_embedding=True)
    return {"model_type": variant, "base_model": "", "nframe": 21, "freeze_backbone": True, "scale_map": None,
            "latent_cond_mode": "first_frame_only", "controlnet_cfg": cn, "transformer": backbone}


@torch.no_grad()
def init_cheaply(module: torch.nn.Module, seed: int) -> None:
    """Normal weights of std 1/sqrt(fan_in) (0.02 for vectors), drawn on the module's device."""
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    for p in module.parameters():
        std = 1.0 / math.sqrt(math.prod(p.shape[1:])) if p.ndim >= 2 else 0.02
        p.normal_(0.0, std, generator=g)


def build_transformer(variant: str, device: torch.device, tiny: bool, controlnet: dict | None,
                      seed: int = 0) -> Any:
    """Full-size (or tiny) transformer: meta build, materialised on ``device``, bf16 with the reference
    policy (float32 on the CPU dry run)."""
    from worldstereo.models.checkpoint import parameter_dtype
    from worldstereo.models.config import WorldStereoConfig
    from worldstereo.models.transformer import WorldStereoTransformer

    cfg = WorldStereoConfig.from_dict(transformer_config(variant, tiny, controlnet))
    with torch.device("meta"):
        model = WorldStereoTransformer(cfg)
    if device.type == "cuda":  # dtypes set on the meta tensors: the GPU never holds a float32 copy
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.data = p.data.to(parameter_dtype(name, torch.bfloat16))
    model = model.to_empty(device=device)
    model._rebuild_rope(device)
    init_cheaply(model, seed)
    return model.eval()


def transformer_inputs(variant: str, size: dict, device: torch.device, dtype: torch.dtype, text_dim: int,
                       image_dim: int, image_tokens: int) -> dict:
    F, h, w, R = size["frames"], size["height"] // 8, size["width"] // 8, size["references"]
    g = torch.Generator(device=device).manual_seed(1)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    x = dict(hidden_states=rnd(1, 36, F, h, w), timestep=torch.tensor([937.5], device=device),
             encoder_hidden_states=rnd(1, 512, text_dim), encoder_hidden_states_image=rnd(1, image_tokens, image_dim),
             render_latent=rnd(1, 16, F, h, w), render_mask=(rnd(1, 1, F, 8 * h, 8 * w) > 0).to(dtype),
             camera_embedding=rnd(1, 6, F, 8 * h, 8 * w))
    if variant != "worldstereo-camera":
        x.update(reference_latent=rnd(1, 36, R, h, w), ref_index=torch.arange(R, device=device) % (F - 1),
                 camera_qt=rnd(1, F, 7), camera_qt_ref=rnd(1, R, 7))
    return x


# ------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forwards(model: Any, inputs: dict, device: torch.device, repeats: int) -> tuple[float, float | None]:
    """(seconds per forward after one warm-up forward, peak GB of a forward or None on the CPU)."""
    with torch.no_grad():
        model(**inputs)  # warm-up: kernels, group-offload execution order, lazy casts
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(**inputs)
        _sync(device)
        seconds = (time.perf_counter() - t0) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return seconds, peak


def apply_tier(model: Any, tier: str, device: torch.device, dry_run: bool, offload_dir: Path) -> Any:
    """Apply ``tier`` to a bare transformer built on ``device`` (moved to the CPU first when the tier
    offloads). The dry run uses the tiers' hooks without streams on the CPU."""
    from worldstereo import optimization as opt

    t = opt.get_memory_tier(tier)
    if t.placement != "resident":
        model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    disk = offload_dir if t.placement == "group_block_disk" else None
    if dry_run:
        if t.placement == "model_offload":
            return model  # needs an accelerator even for its hooks' test: timed as resident
        opt._apply_tier(model, t, device, use_stream=False, offload_dir=disk)
    else:
        opt.enable_memory_tier(model, t, device=device, offload_dir=disk)
    return model


def measure_tier(variant: str, tier: str, device: torch.device, size: dict, args: argparse.Namespace,
                 controlnet: dict | None) -> Measurement:
    model = build_transformer(variant, device, args.dry_run, controlnet)
    bb = model.backbone_config
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory(prefix="ws-gpu-bench-") as tmp:
        model = apply_tier(model, tier, device, args.dry_run, Path(tmp))
        x = transformer_inputs(variant, size, device, dtype, bb.text_dim, bb.image_dim, 257 if not args.dry_run else 17)
        seconds, peak = time_forwards(model, x, device, args.repeats)
    del model, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Measurement(variant, tier, seconds, peak)


def measure_encoders(device: torch.device, size: dict, dry_run: bool) -> dict[str, float]:
    """Seconds of the per-video work outside the transformer: 2 prompts through UMT5, 1 CLIP image,
    keyframe VAE encode of F + 1 + R frames and decode of F frames (float32 encoders, bf16 VAE)."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from worldstereo.models.vae import keyframe_decode, keyframe_encode
    from worldstereo.testing import TINY_IMAGE_ENCODER_CONFIG, TINY_TEXT_ENCODER_CONFIG, TINY_VAE_CONFIG

    if dry_run:
        text_cfg, image_cfg, vae_cfg = TINY_TEXT_ENCODER_CONFIG, TINY_IMAGE_ENCODER_CONFIG, TINY_VAE_CONFIG
    else:
        text_cfg = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
                        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                        relative_attention_max_distance=128, is_encoder_decoder=False)
        image_cfg = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                         image_size=224, patch_size=14, hidden_act="gelu")
        vae_cfg = {}
    out: dict[str, float] = {}
    vae_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for name, build in (("text_encoder", lambda: UMT5EncoderModel(UMT5Config(**text_cfg))),
                        ("image_encoder", lambda: CLIPVisionModel(CLIPVisionConfig(**image_cfg))),
                        ("vae", lambda: AutoencoderKLWan(**vae_cfg))):
        with torch.device(device):  # built on the device (buffers such as CLIP's position ids stay valid)
            module = build()
        init_cheaply(module, 2)
        module.eval()
        with torch.no_grad():
            if name == "text_encoder":
                ids = torch.randint(0, text_cfg["vocab_size"], (1, 512), device=device)
                fn = lambda: [module(ids).last_hidden_state for _ in range(2)]  # noqa: E731
            elif name == "image_encoder":
                px = torch.randn(1, 3, image_cfg["image_size"], image_cfg["image_size"], device=device)
                fn = lambda: module(pixel_values=px, output_hidden_states=True)  # noqa: E731
            else:
                module.to(vae_dtype)
                F, R = size["frames"], size["references"]
                video = torch.rand(1, 3, F + 1 + R, size["height"], size["width"], device=device) * 2 - 1

                def fn() -> Any:
                    z = keyframe_encode(module, video)
                    return keyframe_decode(module, z[:, :, :F])
            fn()  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out[name] = time.perf_counter() - t0
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------ context parallel
def _cp_worker(rank: int, world: int, init: str, variant: str, size: dict, dry_run: bool, repeats: int,
               controlnet: dict | None, result: str) -> None:
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    if dry_run:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
        device = torch.device("cpu")
    else:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"file://{init}", rank=rank, world_size=world)
        device = torch.device("cuda", rank)
    try:
        model = build_transformer(variant, device, dry_run, controlnet)
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
        bb = model.backbone_config
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        x = transformer_inputs(variant, size, device, dtype, bb.text_dim, bb.image_dim, 17 if dry_run else 257)
        seconds, peak = time_forwards(model, x, device, repeats)
        if rank == 0:
            Path(result).write_text(json.dumps({"seconds": seconds, "peak_gb": peak}))
    finally:
        dist.destroy_process_group()


def measure_context_parallel(world: int, variant: str, size: dict, args: argparse.Namespace,
                             controlnet: dict | None) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ws-gpu-bench-cp-") as tmp:
        result = Path(tmp) / "result.json"
        mp.spawn(_cp_worker, args=(world, str(Path(tmp) / "init"), variant, size, args.dry_run, args.repeats,
                                   controlnet, str(result)), nprocs=world)
        return json.loads(result.read_text())


# ------------------------------------------------------------------------------------------ report
def report(rows: list[Measurement], encoders: dict[str, float], cp: dict | None, cp_world: int,
           args: argparse.Namespace, device: torch.device, size: dict) -> str:
    fixed = sum(encoders.values())
    lines = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, tiny sizes)"
    lines.append(f"# benchmarks/gpu.py — {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    lines.append(f"size {size['height']}x{size['width']}x{size['frames']} keyframes, "
                 f"{size['references']} references (memory), {args.repeats} timed forward(s) after a warm-up")
    lines.append(f"per-video work outside the transformer: {fixed:.2f} s "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in encoders.items()))
    lines.append("")
    lines.append("| variant | tier | s / forward | s / step | s / video | peak VRAM forward (GB) |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        variants = [r.variant] + (["worldstereo-memory-dmd"] if r.variant == "worldstereo-memory" else [])
        for v in variants:
            dmd = v.endswith("-dmd")
            per_step = r.seconds_per_forward * (1 if dmd else 2)
            video = per_step * (DMD_STEPS if dmd else UNIPC_STEPS) + fixed
            peak = f"{r.peak_gb:.1f}" if r.peak_gb is not None else "n/a"
            lines.append(f"| {v} | {r.tier} | {r.seconds_per_forward:.2f} | {per_step:.2f} | {video:.1f} | {peak} |")
    lines.append("")
    lines.append(f"s / step: UniPC = 2 forwards (CFG), DMD = 1; s / video: {UNIPC_STEPS} UniPC steps or "
                 f"{DMD_STEPS} DMD steps + the per-video work above (extrapolated from the timed forwards)")
    if cp is not None:
        one = next((r for r in rows if r.variant == args.cp_variant and r.tier == "resident"), None)
        speed = f"{one.seconds_per_forward / cp['seconds']:.2f}x" if one is not None else "n/a (no 1-GPU resident row)"
        peak = f"{cp['peak_gb']:.1f} GB" if cp.get("peak_gb") is not None else "n/a"
        lines.append(f"context parallel (Ulysses, {cp_world} ranks, {args.cp_variant}): {cp['seconds']:.2f} s / forward, "
                     f"speed-up vs 1 rank {speed}, peak per rank {peak}")
    else:
        lines.append("context parallel: not measured (one device visible; pass --cp N with N GPUs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--tiers", nargs="+", default=None,
                    help="tiers to time for every variant (default: resident for the camera variant; resident, fp8, "
                         "int8, group_offload for the memory variant)")
    ap.add_argument("--repeats", type=int, default=1, help="timed forwards per tier after one warm-up (default 1)")
    ap.add_argument("--cp", type=int, default=None,
                    help="context-parallel ranks (default: all visible GPUs when more than one; 0 = skip)")
    ap.add_argument("--cp-variant", choices=VARIANTS, default="worldstereo-memory")
    ap.add_argument("--controlnet-config", type=Path, default=None,
                    help="JSON controlnet_cfg of the release checkpoint (default: worldstereo.vram.ASSUMED_CONTROLNET)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, numbers meaningless")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: must be >= 1")

    if not args.dry_run and not torch.cuda.is_available():
        print("benchmarks/gpu.py: needs a CUDA GPU, but torch.cuda.is_available() is False on this machine "
              "(no GPU, or a CPU-only PyTorch build). Run with --dry-run to check the script on the CPU at tiny "
              "size.", file=sys.stderr)
        return 2
    from worldstereo.vram import MEMORY_TIERS

    tiers_for = {v: list(args.tiers) if args.tiers else list(DEFAULT_TIERS[v]) for v in args.variants}
    unknown = sorted({t for ts in tiers_for.values() for t in ts} - set(MEMORY_TIERS))
    if unknown:
        ap.error(f"--tiers: unknown {unknown}; expected some of {list(MEMORY_TIERS)}")
    if args.dry_run:
        for v in tiers_for:  # torchao may be absent on the CPU box; the CPU check does not need it
            import importlib.util

            if importlib.util.find_spec("torchao") is None:
                tiers_for[v] = [t for t in tiers_for[v] if t not in ("int8", "float8", "int8_model_offload")]
    controlnet = json.loads(args.controlnet_config.read_text()) if args.controlnet_config else None
    device = torch.device("cuda", torch.cuda.current_device()) if not args.dry_run else torch.device("cpu")
    if args.dry_run:
        torch.set_num_threads(1)
    size = TINY if args.dry_run else FULL

    t0 = time.perf_counter()
    encoders = measure_encoders(device, size, args.dry_run)
    rows = []
    for variant in args.variants:
        for tier in tiers_for[variant]:
            rows.append(measure_tier(variant, tier, device, size, args, controlnet))
            print(f"[{time.perf_counter() - t0:6.0f} s] {variant} {tier}: {rows[-1].seconds_per_forward:.3f} s/forward",
                  file=sys.stderr, flush=True)
    n_gpus = torch.cuda.device_count() if not args.dry_run else 2
    cp_world = args.cp if args.cp is not None else (n_gpus if (n_gpus > 1 and not args.dry_run) else 0)
    cp = None
    if cp_world and cp_world > 1:
        if not args.dry_run and cp_world > n_gpus:
            ap.error(f"--cp: {cp_world} ranks but only {n_gpus} GPU(s) visible")
        cp = measure_context_parallel(cp_world, args.cp_variant, size, args, controlnet)
    text = report(rows, encoders, cp, cp_world, args, device, size)
    print(text)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "encoders": encoders,
                                         "context_parallel": cp, "report": text}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
