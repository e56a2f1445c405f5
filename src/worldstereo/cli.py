"""The ``worldstereo`` command line.

Sub-commands live in :mod:`worldstereo.commands`; each module in :data:`COMMAND_MODULES` exposes
``register(subparsers)`` and sets ``func=run`` on its parser. Exit status: 0 on success, 2 for bad
input (argument errors, missing, unreadable or invalid files, an unusable ``--out``, unknown presets —
a one-line message names the option), 1 for other failures.

Every command with an ``--out`` folder runs inside :func:`worldstereo.io.output_folder.output_folder`:
``--out`` is checked before any work, the command writes into a staging folder next to it, and the
staging folder replaces ``--out`` in one atomic step when the command succeeds (see
``docs/reliability.md``). A command opts out with ``set_defaults(output_folder_arg=None)`` (``batch``,
whose ``--out`` grows job by job; each job folder is its own transaction).

Under ``torchrun`` (``torchrun --nproc-per-node N -m worldstereo ...``) only rank 0 logs at the
chosen level, shows progress bars and writes ``--out`` (the other ranks compute the same video and
write nothing; they log warnings and errors only). A process group the command initialised is
destroyed when it ends.

CPU threads: ``--threads N`` sets torch's intra-op threads; without it, ``OMP_NUM_THREADS`` is
respected, else :func:`default_threads` picks the CPUs this process may use (affinity mask, cgroup
CPU quota) minus those the rest of the machine keeps busy (1-minute load average), at least one:
on a shared machine more threads than free cores make every frame wait for the slowest thread.
"""

from __future__ import annotations

import argparse
import errno
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
COMMAND_MODULES: tuple[str, ...] = ("render", "demo", "generate", "multi_view", "reconstruct", "batch", "app")

#: most CPU threads ``--threads`` accepts (torch crashes with absurd values)
MAX_THREADS = 256

#: exceptions reported as bad input (exit status 2) without a traceback
_BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ImportError)
#: other OSErrors that come from a bad path given by the user (exit status 2)
_BAD_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS, errno.ENOTDIR,
                    errno.EISDIR, errno.ENOENT}


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


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


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
    if _rank() != 0 and not verbose:
        level = logging.WARNING
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
    if _rank() != 0:  # one set of progress bars: rank 0's (also Hugging Face's loading bars)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if hasattr(args, "no_progress"):
            args.no_progress = True
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        logger.error("error: --threads: expected a positive integer (at most %d), got %s", MAX_THREADS, args.threads)
        return 2
    previous_threads = None
    had_process_group = _process_group_exists()  # one a command initialises is destroyed at the end
    threads = args.threads if args.threads is not None else default_threads()
    if threads is not None:
        import torch

        previous_threads = torch.get_num_threads()
        if threads != previous_threads:
            logger.debug("using %d CPU thread(s) (--threads to change)", threads)
        torch.set_num_threads(threads)
    try:
        return _run_command(args)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports every failure with a message
        bad_input = isinstance(exc, _BAD_INPUT) or (isinstance(exc, OSError) and exc.errno in _BAD_PATH_ERRNOS)
        if args.verbose:
            logger.exception("error" if bad_input else "failed")
        elif bad_input:
            logger.error("error: %s", _one_line(exc))
        else:
            logger.error("failed: %s: %s (run with -v for the traceback)", type(exc).__name__, _one_line(exc))
        return 2 if bad_input else 1
    finally:
        if previous_threads is not None:  # main() may run inside a larger process (tests, notebooks)
            import torch

            torch.set_num_threads(previous_threads)
        if not had_process_group and _process_group_exists():
            sys.modules["torch.distributed"].destroy_process_group()


def _process_group_exists() -> bool:
    """Whether a torch.distributed process group exists (without importing torch for it)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (newlines of multi-line messages folded)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _refuse_out_inside_inputs(args: argparse.Namespace, target: object, option: str) -> None:
    """``--out`` may not be, or lie inside, a folder the command reads (``input_folder_args``: the
    ``reconstruct`` INPUT folder, ``generate --inputs``): the result would be written into the input
    and a later run would read its own output."""
    from worldstereo.commands import UsageError
    from worldstereo.io.paths import is_inside

    for attr in getattr(args, "input_folder_args", ()):
        value = getattr(args, attr, None)
        if value is None or not Path(value).is_dir():
            continue
        if is_inside(os.path.abspath(os.fspath(target)), value):
            name = "INPUT" if attr == "input" else "--" + attr.replace("_", "-")
            raise UsageError(f"{option}: {os.fspath(target)!r} lies inside the folder {name} reads "
                             f"({os.fspath(value)!r}); choose an output folder outside it")


def _run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, inside a transactional output folder when the command has ``--out``."""
    attr = getattr(args, "output_folder_arg", "out")
    if attr is None or getattr(args, attr, None) is None or _rank() != 0:  # torchrun: rank 0 writes --out
        return int(args.func(args) or 0)
    from worldstereo.io.output_folder import output_folder

    target = getattr(args, attr)
    option = "--" + attr.replace("_", "-")
    _refuse_out_inside_inputs(args, target, option)
    with output_folder(target, owner=args.command, option=option) as staged:
        setattr(args, attr, staged.path)
        args.output_target = staged.target
        try:
            code = int(args.func(args) or 0)
        finally:
            setattr(args, attr, target)
        if code != 0:
            staged.discard()
    if code == 0:
        logger.info("results in %s", staged.target)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
