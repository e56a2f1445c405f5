"""``worldstereo batch``: one video per line of a JSON Lines jobs file, resumable, over any number of ranks.

Only parses the command line; the work is :func:`worldstereo.batch.run_batch` (the jobs-file schema,
the output layout, resuming and the distribution over ``torchrun`` ranks are documented there and in
``docs/cli.md``). Exit status: 0 when every job is finished, 1 when some job failed (the others ran
and are recorded; a re-run retries the failed ones), 2 for invalid jobs or options (nothing ran).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from worldstereo.commands import UsageError, bounded_float, bounded_int, options_named, output_path, positive_int
from worldstereo.commands.parallel_options import add_parallel_options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command."""
    p = subparsers.add_parser(
        "batch",
        help="run one video per line of a JSON Lines jobs file (resumable; spread over torchrun ranks)",
        description=(
            "Generate one video per job of JOBS (a JSON Lines file: image, trajectory, prompt, seed, size, steps, "
            "... per line; see docs/cli.md) into OUT/<output>/ with the files of `worldstereo generate`. Every line "
            "is validated before the model is loaded. Finished jobs are recorded (OUT/manifest.json) and skipped "
            "when run again; a failing job is recorded with its error and the others go on. Under torchrun the "
            "jobs are spread over the ranks; --batch-size runs compatible jobs through one batched forward."
        ),
    )
    p.add_argument("jobs", type=Path, metavar="JOBS", help="JSON Lines jobs file (one JSON object per line)")
    p.add_argument("--out", required=True, type=output_path, help="output folder (created; one sub-folder per job)")
    p.add_argument("--model", required=True, metavar="PATH|ID", help="WorldStereo checkpoint (as for generate)")
    p.add_argument("--variant", choices=("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd"),
                   default=None, help="model type to load (default: the jobs' 'variant', else worldstereo-memory)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="B",
                   help="run up to B compatible jobs (same size, frames, steps, guidance, references) through one "
                        "batched forward (default 1)")
    add_parallel_options(p, group_size=True)
    p.add_argument("--device", default=None, help="torch device for one-process runs (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="weights dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--memory-tier", default=None, metavar="NAME",
                   help="memory tier for one-process runs (see `generate --memory-tier`)")
    p.add_argument("--depth-model", default=None,
                   help="depth model for jobs without a 'depth' file (default: the model's, else "
                        "depth-anything/Depth-Anything-V2-Small-hf)")
    defaults = p.add_argument_group("defaults for fields the jobs leave out (see docs/cli.md)")
    defaults.add_argument("--frames", type=bounded_int(2, 1024), default=None, help="frames per video")
    defaults.add_argument("--height", type=bounded_int(16, 4096), default=None, help="height, multiple of 16")
    defaults.add_argument("--width", type=bounded_int(16, 4096), default=None, help="width, multiple of 16")
    defaults.add_argument("--steps", type=bounded_int(1, 1000), default=None, help="UniPC steps (default 40)")
    defaults.add_argument("--guidance", type=bounded_float(0.0, 100.0, low_open=False), default=None,
                          help="guidance scale (default 5)")
    defaults.add_argument("--fov", type=bounded_float(0.0, 179.9), default=None,
                          help="horizontal field of view in degrees when a trajectory has no intrinsics")
    p.add_argument("--fps", type=bounded_int(1, 240), default=16, help="frame rate of the written videos (default 16)")
    p.add_argument("--force", action="store_true", help="run every job again, including finished ones")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run, output_folder_arg=None)  # OUT grows job by job; each job folder is a transaction
    return p


#: run_batch parameter -> the option that sets it (for messages)
_OPTION_OF = {name: "--" + name.replace("_", "-") for name in (
    "out", "model", "variant", "device", "dtype", "batch_size", "parallel", "group_size", "fsdp", "memory_tier",
    "depth_model", "fps")}


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo batch``; returns the exit status."""
    from worldstereo.batch import JobsFileError, run_batch

    if args.group_size is not None and args.parallel is None and not args.fsdp and args.group_size > 1:
        raise UsageError("--group-size: more than one rank per video needs --parallel MODE or --fsdp")
    defaults = {name: getattr(args, name) for name in ("frames", "height", "width", "steps", "guidance", "fov")
                if getattr(args, name) is not None}
    if (args.height is None) != (args.width is None):
        raise UsageError("--height/--width: give both or neither")
    try:
        with options_named(_OPTION_OF):  # an option refused by run_batch: named as on the command line
            report = run_batch(
                args.jobs, args.out, args.model, variant=args.variant, device=args.device, dtype=args.dtype,
                batch_size=args.batch_size, parallel=args.parallel, group_size=args.group_size, fsdp=args.fsdp,
                memory_tier=args.memory_tier, depth_model=args.depth_model, defaults=defaults, fps=args.fps,
                force=args.force, progress=not args.no_progress,
            )
    except JobsFileError as exc:
        if exc.source != "defaults":
            raise
        line, name, message = exc.problems[0]  # a default given as an option: name the option
        raise UsageError(f"--{name}: {message}") from None
    for name, error in report.failed.items():
        logger.error("failed: %s: %s", name, error)
    logger.info("%d done, %d skipped (already finished), %d failed; manifest: %s", len(report.done),
                len(report.skipped), len(report.failed), report.manifest)
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("use the `worldstereo batch` command")
