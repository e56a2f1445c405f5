"""``worldstereo app``: the browser app (scene, camera path in 3D, preview, generation, 3D); see ``docs/app.md``.

It serves until interrupted (Ctrl-C). Nothing is loaded or fetched at start-up: the checkpoint is
loaded by the first generation (memory tier chosen for the GPU), the depth model by the first image
without a depth file. Only a local checkpoint folder is read at start-up, for its ``config.json``
(generation sizes and frame count). The app has no ``--out``: results are downloaded from the page.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from worldstereo.commands import UsageError, bounded_int
from worldstereo.commands.render import check_depth_model_spec

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

#: choices of --variant / --dtype (kept literal so that --help does not import torch)
VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")
DTYPES = ("float32", "float16", "bfloat16")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``app`` sub-command."""
    p = subparsers.add_parser(
        "app",
        help="browser app: load a scene, author a camera path in 3D, preview, generate, download the 3D",
        description=(
            "Serve the WorldStereo browser app (Gradio) until interrupted. Load a photo or a 2:1 panorama (with its "
            "depth map, or estimated), author a camera path (presets, keyframes placed in the 3D view, trajectory "
            "files), preview the point-cloud render and hole mask the model is conditioned on with its per-frame "
            "coverage, generate with --model, reconstruct and download the 3D. Binds to 127.0.0.1 unless --host "
            "says otherwise; needs `pip install 'worldstereo[app]'`."
        ),
    )
    p.add_argument("--model", default=None, metavar="PATH|ID",
                   help="WorldStereo checkpoint (reference root or variant folder, save_pretrained folder, or Hugging "
                        "Face id), loaded on the first generation; without it the app previews only")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="model type to load from a reference root (default: worldstereo-memory)")
    p.add_argument("--device", default=None, help="torch device for generation (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="transformer/VAE dtype on CUDA (default bfloat16; the CPU always uses float32)")
    p.add_argument("--memory-tier", default=None, metavar="NAME",
                   help="place the model by this memory tier (docs/performance.md; default on CUDA: the tier suggested "
                        "for the GPU's memory)")
    p.add_argument("--depth-model", default=None,
                   help="depth model id or local folder for images without a depth map, or 'moge' (default: "
                        "depth-anything/Depth-Anything-V2-Small-hf, loaded on first use)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app, without "
                        "authentication, to the network)")
    p.add_argument("--port", type=bounded_int(1, 65535), default=7860, help="TCP port (default 7860)")
    p.add_argument("--max-upload-mb", type=bounded_int(1, 10_000), default=50,
                   help="largest uploaded file in MB (default 50)")
    p.add_argument("--max-frames", type=bounded_int(2, 1000), default=121,
                   help="most frames of a camera path (default 121)")
    p.set_defaults(func=run, output_folder_arg=None)
    return p


def _check(args: argparse.Namespace) -> None:
    """Every check that needs no network and no weights (fast, before serving)."""
    import torch


    if not args.host.strip() or any(c.isspace() for c in args.host):
        raise UsageError(f"--host: expected an address such as 127.0.0.1, got {args.host!r}")
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except (RuntimeError, ValueError) as exc:
            raise UsageError(f"--device: {args.device!r} is not a torch device ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device: {args.device!r} requested but CUDA is not available; use --device cpu")
    if args.memory_tier is not None:
        from worldstereo.vram import MEMORY_TIERS, get_memory_tier

        if args.memory_tier not in MEMORY_TIERS:
            raise UsageError(f"--memory-tier: expected one of {', '.join(MEMORY_TIERS)}, got {args.memory_tier!r}")
        on_cpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
        if get_memory_tier(args.memory_tier).needs_accelerator and on_cpu:
            raise UsageError(f"--memory-tier {args.memory_tier}: needs a CUDA device")
    check_depth_model_spec(args.depth_model)
    if args.model is not None:
        path = Path(args.model)
        if path.exists() and not path.is_dir():
            raise UsageError(f"--model: {args.model!r} is a file, expected a checkpoint folder or a Hugging Face id")
        if not path.exists() and (args.model.count("/") != 1 or args.model.startswith((".", "/", "~"))):
            raise UsageError(f"--model: {args.model!r} is neither an existing folder nor a Hugging Face id (owner/name)")


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo app``: serve until interrupted; returns the exit status."""
    _check(args)
    try:
        from worldstereo.app import AppModels, ModelSpec, checkpoint_defaults, launch
        import gradio  # noqa: F401 - fail here, with the install hint, not inside the server
    except ImportError as exc:
        raise ImportError(f"worldstereo app needs Gradio ({exc}): pip install 'worldstereo[app]'") from None
    try:
        defaults = checkpoint_defaults(args.model, args.variant)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UsageError(f"--model: cannot read {args.model!r}: {' '.join(str(exc).split())}") from None
    spec = ModelSpec(path=args.model, variant=args.variant, device=args.device, dtype=args.dtype,
                     memory_tier=args.memory_tier, depth_model=args.depth_model)
    frames = min(int(defaults.get("nframe", 21)), args.max_frames)
    logger.info("worldstereo app on http://%s:%d (Ctrl-C to stop)%s", args.host, args.port,
                "" if args.host in ("127.0.0.1", "localhost", "::1") else
                " - reachable from the network, without authentication")
    demo = launch(AppModels(spec), host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                  scale_map=defaults.get("scale_map"), default_frames=max(2, frames), max_frames=args.max_frames,
                  quiet=False)
    demo.close()
    return 0
