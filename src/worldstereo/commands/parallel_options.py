"""Command-line options for several GPUs / machines (``--parallel``, ``--fsdp``, ``--group-size``)
and their use: under ``torchrun`` the process group is initialised, the model loaded on the CPU and
placed by :func:`worldstereo.parallel.enable_context_parallel`."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from worldstereo.commands import UsageError, positive_int

__all__ = ["PARALLEL_CHOICES", "add_parallel_options", "wants_parallel", "parallel_device", "apply_parallel"]

logger = logging.getLogger(__name__)

#: ``--parallel`` choices (= :data:`worldstereo.parallel.PARALLEL_MODES`; literal for a fast ``--help``)
PARALLEL_CHOICES: tuple[str, ...] = ("ulysses", "ring", "cfg", "cfg+ulysses", "cfg+ring", "none")


def add_parallel_options(parser: argparse.ArgumentParser, *, group_size: bool = False) -> None:
    """Add ``--parallel`` and ``--fsdp`` (and ``--group-size`` for commands that spread jobs over groups)."""
    parser.add_argument("--parallel", choices=PARALLEL_CHOICES, default=None, metavar="MODE",
                        help="split each video over the torchrun ranks: ulysses or ring (context parallel; ring "
                             "needs CUDA), cfg (the two guidance passes on two ranks), cfg+ulysses / cfg+ring, or "
                             "none; launch with `torchrun --nproc-per-node N -m worldstereo ...` (see "
                             "docs/performance.md)")
    parser.add_argument("--fsdp", action="store_true",
                        help="shard the transformer and text-encoder weights over the ranks of a video (FSDP2) for "
                             "GPUs that cannot hold a full copy; needs torchrun")
    if group_size:
        parser.add_argument("--group-size", type=positive_int, default=None, metavar="G",
                            help="ranks per video (default: all ranks with --parallel/--fsdp, else 1); the jobs "
                                 "are spread over the world_size / G groups")


def wants_parallel(args: argparse.Namespace) -> bool:
    """Whether the command line asks for several processes per video."""
    return getattr(args, "parallel", None) is not None or bool(getattr(args, "fsdp", False))


def parallel_device(args: argparse.Namespace) -> str:
    """Initialise torch.distributed (torchrun) and return this rank's device.

    Raises:
        UsageError: ``--device`` given, or not launched by torchrun.
    """
    from worldstereo.parallel import init_distributed

    if getattr(args, "device", None) is not None:
        raise UsageError("--device: with --parallel / --fsdp each rank uses cuda:LOCAL_RANK (or the CPU); drop it")
    if getattr(args, "memory_tier", None) is not None or getattr(args, "vram", None) is not None:
        raise UsageError("--memory-tier / --vram: place the model on one GPU; with --parallel / --fsdp the ranks "
                         "hold it (use --fsdp to shard the weights)")
    try:
        return str(init_distributed())
    except RuntimeError as exc:
        raise UsageError(f"--parallel/--fsdp: {exc}") from None


def apply_parallel(args: argparse.Namespace, model: Any, device: str) -> Any:
    """Spread ``model`` over the ranks as the options ask; returns the :class:`~worldstereo.parallel.ParallelState`.

    Raises:
        UsageError: the mode does not fit the number of processes or the model (message names the option).
    """
    from worldstereo.parallel import enable_context_parallel

    mode = args.parallel or "none"
    try:
        return enable_context_parallel(model, mode, group_size=getattr(args, "group_size", None), fsdp=args.fsdp,
                                       device=device)
    except (ValueError, NotImplementedError) as exc:
        raise UsageError(f"--parallel {mode}{' --fsdp' if args.fsdp else ''}: {exc}") from None
