"""Forward time and peak memory of the WorldStereo transformer (camera and memory variants).

Default ("moderate") config: backbone width 1024 (8 heads × 128), 8 blocks, FFN 4096, ControlNet
width 512 with 4 blocks; input 21 latent frames of 30×48 (480×768 pixels, 7560 target tokens),
4 references for the memory variant (+1440 tokens). ``--small`` runs a quick tiny setting.
Each variant runs in its own subprocess so that peak memory is measured cleanly (peak RSS from
``/proc/self/status`` VmHWM on CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

Usage: ``python benchmarks/transformer.py [--small] [--device cpu|cuda] [--dtype float32|bfloat16]
[--repeats N] [--backend sdpa|xformers]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODERATE = dict(D_heads=8, head_dim=128, layers=8, ffn=4096, cn_dim=512, cn_heads=4, cn_layers=4, F=21, h=30, w=48,
                R=4)
SMALL = dict(D_heads=4, head_dim=32, layers=2, ffn=256, cn_dim=64, cn_heads=2, cn_layers=2, F=5, h=12, w=16, R=2)


def build_config(model_type: str, s: dict) -> dict:
    D = s["D_heads"] * s["head_dim"]
    cn = {"dim": s["cn_dim"], "ffn_dim": 4 * s["cn_dim"], "num_heads": s["cn_heads"], "time_embed_dim": D,
          "num_layers": s["cn_layers"], "conv_out_dim": D, "add_channels": 7, "mid_channels": 64,
          "mask_downsample": 1}
    if model_type != "worldstereo-camera":
        cn.update(update_ref=True, main_camera_embedding=True, camera_embedding_dim=7, ref_embedding=True)
    return {
        "model_type": model_type, "base_model": "benchmark", "nframe": s["F"], "freeze_backbone": True,
        "scale_map": None, "latent_cond_mode": "first_frame_only", "negative_prompt": "", "controlnet_cfg": cn,
        "transformer": {"patch_size": [1, 2, 2], "num_attention_heads": s["D_heads"],
                        "attention_head_dim": s["head_dim"], "in_channels": 36, "out_channels": 16,
                        "text_dim": 4096, "freq_dim": 256, "ffn_dim": s["ffn"], "num_layers": s["layers"],
                        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
                        "added_kv_proj_dim": D, "rope_max_seq_len": 1024},
    }


def run_variant(model_type: str, s: dict, device: str, dtype_name: str, repeats: int, backend: str) -> dict:
    """Build a random model, time ``repeats`` forwards (after one warm-up), return numbers."""
    import time

    import torch

    from worldstereo.models.config import WorldStereoConfig
    from worldstereo.models.transformer import WorldStereoTransformer

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    cfg = WorldStereoConfig.from_dict(build_config(model_type, s))
    model = WorldStereoTransformer(cfg).to(device=device, dtype=dtype).eval()
    model.set_attention_backend(backend)
    B, F, h, w, R = 1, s["F"], s["h"], s["w"], s["R"]
    g = torch.Generator().manual_seed(1)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    x = dict(hidden_states=rnd(B, 36, F, h, w), timestep=torch.tensor([937.5], device=device),
             encoder_hidden_states=rnd(B, 512, 4096), encoder_hidden_states_image=rnd(B, 257, 1280),
             render_latent=rnd(B, 16, F, h, w), render_mask=rnd(B, 1, F, 8 * h, 8 * w).gt(0).to(dtype),
             camera_embedding=rnd(B, 6, F, 8 * h, 8 * w))
    if model_type != "worldstereo-camera":
        x.update(reference_latent=rnd(B, 36, R, h, w), ref_index=torch.arange(R) % (F - 1),
                 camera_qt=rnd(B, F, 7), camera_qt_ref=rnd(B, R, 7))
    n_params = sum(p.numel() for p in model.parameters())
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        model(**x)  # warm-up
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(**x)
            sync()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else _vm_hwm()
    tokens = F * (h // 2) * (w // 2)
    return {"variant": model_type, "params_M": n_params / 1e6, "tokens": tokens,
            "ref_tokens": R * (h // 2) * (w // 2) if model_type != "worldstereo-camera" else 0,
            "forward_s_mean": sum(times) / len(times), "forward_s_min": min(times), "peak_bytes": peak,
            "peak_kind": "cuda max_memory_allocated" if cuda else "process peak RSS (VmHWM)"}


def _vm_hwm() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny quick setting instead of the moderate one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--backend", default="sdpa", choices=["sdpa", "xformers"])
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setting = SMALL if args.small else MODERATE
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, setting, args.device, args.dtype, args.repeats, args.backend)))
        return 0
    print(f"setting: {'small' if args.small else 'moderate'} {setting}; device {args.device}, {args.dtype}, "
          f"attention {args.backend}")
    for variant in ("worldstereo-camera", "worldstereo-memory"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--device", args.device,
               "--dtype", args.dtype, "--repeats", str(args.repeats), "--backend", args.backend]
        if args.small:
            cmd.append("--small")
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{r['variant']:22s} params {r['params_M']:8.1f} M  tokens {r['tokens']:6d} (+{r['ref_tokens']} ref)  "
              f"forward {r['forward_s_mean']:8.3f} s (min {r['forward_s_min']:.3f})  "
              f"peak {r['peak_bytes'] / 2**30:6.2f} GiB [{r['peak_kind']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
