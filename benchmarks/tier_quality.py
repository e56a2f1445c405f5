"""Quality cost of the lossy memory tiers, measured at tiny size against float32.

For each variant, a tiny random WorldStereo model (``worldstereo.testing.tiny_model``, every weight
re-drawn so that the zero-initialised ControlNet projections and camera MLP contribute) is run

* once in float32 (the baseline, everything resident), and
* once per lossy tier (:func:`worldstereo.optimization.enable_memory_tier` on the CPU),

on the same inputs: one transformer forward (t = 900, references and camera tokens for the memory
variants) and one short generation (2 UniPC steps with guidance, or the DMD variant's fixed 4-step
schedule) of a 4-frame 32x32 video. Printed per tier and variant: max abs error and relative L2
error ``||out - ref|| / ||ref||`` of the transformer output and of the decoded video (values in [0, 1]).
A ``bfloat16`` row (the reference dtype policy at bf16, what the lossless tiers run at ``--dtype
bfloat16``) separates the cost of bf16 compute from the cost of the 8-bit weights. The lossless tiers
(resident, model/group offloading) reproduce the baseline exactly (see tests/test_memory_tiers.py);
tiers that combine fp8 storage with offloading have the numbers of ``fp8``.

Usage: ``python benchmarks/tier_quality.py [--tiers fp8 int8 float8] [--variants ...] [--seed 0]``
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import torch

VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")
LOSSY = ("bfloat16", "fp8", "int8", "float8")
H = W = 32
FRAMES = 4


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Re-draw the transformer's weights: matrices N(0, 1/fan_in), zero-initialised vectors N(0, 0.02²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif bool((p == 0).all()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def build(variant: str, seed: int) -> torch.nn.Module:
    from worldstereo.testing import tiny_model

    model = tiny_model(variant, seed=seed)
    randomize(model.transformer, seed + 1)
    return model


def forward_inputs(model: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    B, F, h, w, R = 1, FRAMES, H // 8, W // 8, 2
    x = dict(hidden_states=torch.randn(B, 36, F, h, w, generator=g), timestep=torch.tensor([900.0]),
             encoder_hidden_states=model.encode_prompt("a quiet street with trees"),
             encoder_hidden_states_image=torch.randn(B, 17, 20, generator=g),
             render_latent=torch.randn(B, 16, F, h, w, generator=g),
             render_mask=(torch.rand(B, 1, F, 8 * h, 8 * w, generator=g) > 0.5).float(),
             camera_embedding=torch.randn(B, 6, F, 8 * h, 8 * w, generator=g))
    if model.is_memory:
        x.update(reference_latent=torch.randn(B, 36, R, h, w, generator=g), ref_index=torch.arange(R),
                 camera_qt=torch.randn(B, F, 7, generator=g), camera_qt_ref=torch.randn(B, R, 7, generator=g))
    return x


def run(model: torch.nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(transformer output, generated video) in float32."""
    from worldstereo.camera import CameraTrajectory
    from worldstereo.pipeline import generate_video

    with torch.no_grad():
        out = model.transformer(**forward_inputs(model, seed)).sample.float()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, H, W, generator=g)
    traj = CameraTrajectory.forward(distance=0.3, num_frames=FRAMES, height=H, width=W)
    video = generate_video(model, image, traj, num_frames=FRAMES, height=H, width=W, num_inference_steps=2,
                           guidance_scale=5.0, prompt="a quiet street with trees", depth_estimator=torch.full((H, W), 2.0),
                           seed=seed)
    return out, video.float()


def errors(a: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    return float((a - ref).abs().max()), float((a - ref).norm() / ref.norm())


def measure(tier: str, variant: str, seed: int = 0, baseline: tuple | None = None) -> dict:
    """Errors of ``tier`` against the float32 baseline for ``variant``."""
    from worldstereo.models.checkpoint import parameter_dtype
    from worldstereo.optimization import enable_memory_tier

    ref = baseline if baseline is not None else run(build(variant, seed), seed)
    model = build(variant, seed)
    if tier == "bfloat16":
        with torch.no_grad():
            for name, p in model.transformer.named_parameters():
                p.data = p.data.to(parameter_dtype(name, torch.bfloat16))
    else:
        enable_memory_tier(model, tier, device="cpu")
    out, video = run(model, seed)
    fmax, frel = errors(out, ref[0])
    vmax, vrel = errors(video, ref[1])
    return {"tier": tier, "variant": variant, "forward_max": fmax, "forward_rel": frel, "video_max": vmax,
            "video_rel": vrel}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiers", nargs="+", default=list(LOSSY), choices=LOSSY)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tiers = [t for t in args.tiers if t not in ("int8", "float8") or importlib.util.find_spec("torchao")]
    if len(tiers) < len(args.tiers):
        print("torchao not installed: skipping int8 / float8", file=sys.stderr)
    t0 = time.perf_counter()
    rows = []
    for variant in args.variants:
        baseline = run(build(variant, args.seed), args.seed)
        for tier in tiers:
            rows.append(measure(tier, variant, args.seed, baseline))
    print(f"torch {torch.__version__}, CPU, tiny models (seed {args.seed}), {time.perf_counter() - t0:.0f} s")
    print("| tier | variant | transformer max abs | transformer rel L2 | video max abs | video rel L2 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tier']} | {r['variant']} | {r['forward_max']:.3g} | {r['forward_rel']:.3g} | "
              f"{r['video_max']:.3g} | {r['video_rel']:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
