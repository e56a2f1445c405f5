"""Sub-commands of the ``worldstereo`` CLI.

Every module here exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` (``run(args) -> int`` exit code) with ``parser.set_defaults``. :mod:`worldstereo.cli`
lists the modules in ``COMMAND_MODULES``.

Errors: a command raises :class:`UsageError` (or ``ValueError``/``FileNotFoundError`` from the library)
for bad input; the CLI prints the message and exits with status 2.

Output: :func:`worldstereo.cli.main` runs every command that has ``--out`` inside a transactional
output folder (:mod:`worldstereo.io.output_folder`): while ``run(args)`` executes, ``args.out`` is
the staging folder and ``args.output_target`` the final one (:func:`final_path` maps a written
path to where it will be).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "add_fit_option", "bounded_float", "bounded_int", "final_path", "options_named",
           "output_path", "parse_key_values", "positive_float", "positive_int"]

#: default of ``--fit-trajectory`` without a value (= ``worldstereo.camera.fit.DEFAULT_MIN_COVERAGE``,
#: kept literal so that ``--help`` does not import torch)
FIT_DEFAULT_COVERAGE = 0.5


class UsageError(ValueError):
    """Bad command-line input; reported without a traceback, exit status 2."""


@contextlib.contextmanager
def options_named(options: Mapping[str, str]) -> Iterator[None]:
    """Context manager: a ``ValueError`` of the library whose message starts with one of its parameter
    names (``"voxel_size: ..."``) is re-raised as a :class:`UsageError` naming the command-line option
    that set it (``"--voxel-size: ..."``), so that every message names what the user typed."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as exc:
        name, sep, rest = str(exc).partition(": ")
        if sep and name in options:
            raise UsageError(f"{options[name]}: {rest}") from exc
        raise


def positive_int(text: str) -> int:
    """argparse type: a strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a strictly positive finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def bounded_int(low: int, high: int) -> Any:
    """argparse type: an integer in ``[low, high]`` (the bounds keep work and memory finite)."""
    expected = (f"a positive integer (at most {high})" if low == 1 else
                f"a non-negative integer (at most {high})" if low == 0 else f"an integer in [{low}, {high}]")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float, high: float, *, low_open: bool = True) -> Any:
    """argparse type: a finite float in ``(low, high]`` (``[low, high]`` with ``low_open=False``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def output_path(text: str) -> Path:
    """argparse type of ``--out``: a non-empty path (``""`` would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    if "\x00" in text:
        raise argparse.ArgumentTypeError("the path contains a NUL character")
    return Path(text)


def final_path(args: argparse.Namespace, path: str | Path, attr: str = "out") -> Path:
    """Where ``path``, written into the staging folder ``args.<attr>``, lies once the command succeeded."""
    p = Path(path)
    target = getattr(args, "output_target", None)
    if target is None:
        return p
    try:
        return Path(target) / p.relative_to(Path(getattr(args, attr)))
    except ValueError:
        return p


def add_fit_option(parser: argparse.ArgumentParser) -> None:
    """``--fit-trajectory [MIN_COVERAGE]`` (``render``, ``demo``, ``generate``, ``multi-view``)."""
    parser.add_argument(
        "--fit-trajectory", nargs="?", const=FIT_DEFAULT_COVERAGE, default=None, type=bounded_float(0.0, 1.0),
        metavar="MIN_COVERAGE",
        help="scale each trajectory's motion (rotations kept) so that the point-cloud render covers at least "
             f"MIN_COVERAGE of every frame (default {FIT_DEFAULT_COVERAGE}); the motion only shrinks")


def _parse_scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        raise UsageError(f"expected a finite number, got {text!r}")
    return value


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (numbers and true/false converted) into a dict.

    Raises:
        UsageError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = _parse_scalar(value.strip())
        except UsageError as exc:
            raise UsageError(f"{option}: {key.strip()}: {exc}") from None
    return out
