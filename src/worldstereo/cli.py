"""The ``worldstereo`` command line.

Sub-commands live in :mod:`worldstereo.commands`; each module in :data:`COMMAND_MODULES` exposes
``register(subparsers)`` and sets ``func=run`` on its parser. Exit status: 0 on success, 2 for bad
input (argument errors, missing or invalid files, unknown presets — the message names the option),
1 for other failures.

CPU threads: ``--threads N`` sets torch's intra-op threads; without it, ``OMP_NUM_THREADS`` is
respected, else :func:`default_threads` picks the CPUs this process may use (affinity mask, cgroup
CPU quota) minus those the rest of the machine keeps busy (1-minute load average), at least one:
on a shared machine more threads than free cores make every frame wait for the slowest thread.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from worldstereo import __version__

__all__ = ["COMMAND_MODULES", "available_cpus", "build_parser", "default_threads", "main"]

logger = logging.getLogger("worldstereo")

#: sub-command modules under ``worldstereo.commands``, in ``--help`` order
COMMAND_MODULES: tuple[str, ...] = ("render", "demo", "generate", "multi_view", "reconstruct")

#: exceptions reported as bad input (exit status 2) without a traceback
_BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ImportError)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command of :data:`COMMAND_MODULES` registered."""
    parser = argparse.ArgumentParser(
        prog="worldstereo",
        description="WorldStereo: camera-guided multi-view-consistent video generation and 3D reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages and tracebacks")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the CPUs this process may "
                             "use minus the machine's current load, at least 1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"worldstereo.commands.{name}")
        module.register(sub)
    return parser


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: the affinity mask (``os.sched_getaffinity``, else
    ``os.cpu_count``), capped by the cgroup CPU quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def default_threads(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The thread count the CLI uses without ``--threads``: None (keep torch's, which follows it)
    when ``OMP_NUM_THREADS`` is set, else :func:`available_cpus` minus the 1-minute load average of
    the machine (rounded), at least 1."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    cpus = available_cpus(cgroup_root)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cpus, int(round(cpus - busy))))


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    root = logging.getLogger("worldstereo")
    # replace handlers installed by an earlier main() call in the same process (tests)
    for h in list(root.handlers):
        if getattr(h, "_worldstereo_cli", False):
            root.removeHandler(h)
    handler._worldstereo_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, argument errors (argparse prints the message)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose, args.quiet)
    if args.threads is not None and args.threads < 1:
        logger.error("error: --threads: expected a positive integer, got %s", args.threads)
        return 2
    previous_threads = None
    threads = args.threads if args.threads is not None else default_threads()
    if threads is not None:
        import torch

        previous_threads = torch.get_num_threads()
        if threads != previous_threads:
            logger.debug("using %d CPU thread(s) (--threads to change)", threads)
        torch.set_num_threads(threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except _BAD_INPUT as exc:
        if args.verbose:
            logger.exception("error")
        else:
            logger.error("error: %s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI reports every failure with a message
        if args.verbose:
            logger.exception("failed")
        else:
            logger.error("failed: %s: %s (run with -v for the traceback)", type(exc).__name__, exc)
        return 1
    finally:
        if previous_threads is not None:  # main() may run inside a larger process (tests, notebooks)
            import torch

            torch.set_num_threads(previous_threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
