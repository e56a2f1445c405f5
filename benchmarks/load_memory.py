"""Peak memory of loading a WorldStereo transformer checkpoint.

Writes a random checkpoint of a wider-than-test config (about ``--size-gb`` GB of float32) to a
temporary directory, then loads it with ``worldstereo.models.checkpoint.load_transformer`` in a fresh
subprocess and reports the peak resident set size (``resource.getrusage`` high-water mark) relative to
the checkpoint size. The loader builds the model on the meta device and reads tensors one at a time,
so the goal is ``(peak RSS − RSS before loading) / checkpoint size ≤ 1.2``.

Usage: ``python benchmarks/load_memory.py [--size-gb 1.0] [--dtype float32|bfloat16] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
import torch
from worldstereo.models.checkpoint import load_transformer
from worldstereo.models.transformer import WorldStereoTransformer  # import cost before the baseline

def status_bytes(field):
    # VmRSS / VmHWM of this process image (VmHWM is reset at exec, unlike ru_maxrss, which
    # Linux carries over from the parent across fork+exec)
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

base_rss = status_bytes("VmRSS")
base_peak = status_bytes("VmHWM")
t0 = time.perf_counter()
model = load_transformer(sys.argv[1], torch_dtype=getattr(torch, sys.argv[2]))
dt = time.perf_counter() - t0
peak = status_bytes("VmHWM")
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"base_rss": base_rss, "base_peak": base_peak, "peak": peak, "seconds": dt,
                  "param_bytes": params}))
"""


def big_config(size_gb: float) -> dict:
    """Reference-schema config whose float32 checkpoint is about ``size_gb`` GB (D = 1024)."""
    D, ffn = 1024, 4096
    # per block: attn1 4·D², attn2 6·D² (incl. added k/v), FFN 2·D·ffn, plus O(D) norms/biases
    per_block = (10 * D * D + 2 * D * ffn) + 16 * D
    layers = max(1, round(size_gb * 1e9 / 4 / per_block))
    return {
        "model_type": "worldstereo-memory", "base_model": "benchmark", "nframe": 21, "freeze_backbone": True,
        "scale_map": None, "latent_cond_mode": "first_frame_only", "negative_prompt": "",
        "controlnet_cfg": {"dim": 512, "ffn_dim": 2048, "num_heads": 4, "time_embed_dim": D, "num_layers": 2,
                           "conv_out_dim": D, "add_channels": 7, "mid_channels": 64, "mask_downsample": 1,
                           "update_ref": True, "main_camera_embedding": True, "camera_embedding_dim": 7,
                           "ref_embedding": True},
        "transformer": {"patch_size": [1, 2, 2], "num_attention_heads": 8, "attention_head_dim": 128,
                        "in_channels": 36, "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": ffn,
                        "num_layers": layers, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
                        "eps": 1e-6, "image_dim": 1280, "added_kv_proj_dim": D, "rope_max_seq_len": 1024},
    }


def write_checkpoint(directory: Path, size_gb: float) -> int:
    """Write config.json + a random model.safetensors (float32) built on the meta device tensor by tensor."""
    import torch
    from safetensors.torch import save_file

    from worldstereo.models.config import WorldStereoConfig
    from worldstereo.models.transformer import WorldStereoTransformer

    cfg = WorldStereoConfig.from_dict(big_config(size_gb))
    with torch.device("meta"):
        model = WorldStereoTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.rand(v.shape, generator=g) - 0.5) * 0.02 for k, v in model.state_dict().items()}
    save_file(sd, str(directory / "model.safetensors"))
    cfg.to_json_file(directory / "config.json")
    return (directory / "model.safetensors").stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="approximate float32 checkpoint size (GB)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="load dtype")
    ap.add_argument("--keep", type=Path, default=None, help="write the checkpoint here and keep it")
    args = ap.parse_args(argv)

    tmp = None
    if args.keep is not None:
        directory = args.keep
        directory.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ws_load_mem_")
        directory = Path(tmp.name)
    try:
        if not (directory / "model.safetensors").is_file():
            t0 = time.perf_counter()
            code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                    f"import load_memory as m; from pathlib import Path; "
                    f"m.write_checkpoint(Path({str(directory)!r}), {args.size_gb!r})")
            subprocess.run([sys.executable, "-c", code], check=True)
            size = (directory / "model.safetensors").stat().st_size
            print(f"wrote {size / 1e9:.2f} GB checkpoint in {time.perf_counter() - t0:.1f} s -> {directory}")
        size = (directory / "model.safetensors").stat().st_size
        env = dict(os.environ)
        res = subprocess.run([sys.executable, "-c", _CHILD, str(directory), args.dtype], capture_output=True,
                             text=True, env=env, check=False)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        r = json.loads(res.stdout.strip().splitlines()[-1])
        gb = 1e9
        print(f"checkpoint size        : {size / gb:.3f} GB (float32 on disk), loaded as {args.dtype}: "
              f"{r['param_bytes'] / gb:.3f} GB of parameters")
        print(f"load time              : {r['seconds']:.2f} s")
        print(f"RSS before loading     : {r['base_rss'] / gb:.3f} GB (peak so far {r['base_peak'] / gb:.3f} GB)")
        print(f"peak RSS               : {r['peak'] / gb:.3f} GB")
        inc = r["peak"] - r["base_rss"]
        print(f"peak increase / size   : {inc / size:.3f}  (goal <= 1.2)")
        print(f"peak increase / loaded : {inc / r['param_bytes']:.3f}")
        print(f"peak RSS / size        : {r['peak'] / size:.3f}  (includes the interpreter + torch import)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
