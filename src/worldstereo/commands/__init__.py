"""Sub-commands of the ``worldstereo`` CLI.

Every module here exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` (``run(args) -> int`` exit code) with ``parser.set_defaults``. :mod:`worldstereo.cli`
lists the modules in ``COMMAND_MODULES``.

Errors: a command raises :class:`UsageError` (or ``ValueError``/``FileNotFoundError`` from the library)
for bad input; the CLI prints the message and exits with status 2.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["UsageError", "add_fit_option", "coverage_share", "parse_key_values", "positive_float", "positive_int"]

#: default of ``--fit-trajectory`` without a value (= ``worldstereo.camera.fit.DEFAULT_MIN_COVERAGE``,
#: kept literal so that ``--help`` does not import torch)
FIT_DEFAULT_COVERAGE = 0.5


class UsageError(ValueError):
    """Bad command-line input; reported without a traceback, exit status 2."""


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
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def coverage_share(text: str) -> float:
    """argparse type: a share of pixels in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share of covered pixels in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share of covered pixels in (0, 1], got {text!r}")
    return value


def add_fit_option(parser: argparse.ArgumentParser) -> None:
    """``--fit-trajectory [MIN_COVERAGE]`` (``render``, ``demo``, ``generate``, ``multi-view``)."""
    parser.add_argument(
        "--fit-trajectory", nargs="?", const=FIT_DEFAULT_COVERAGE, default=None, type=coverage_share,
        metavar="MIN_COVERAGE",
        help="scale each trajectory's motion (rotations kept) so that the point-cloud render covers at least "
             f"MIN_COVERAGE of every frame (default {FIT_DEFAULT_COVERAGE}); the motion only shrinks")


def _parse_scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


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
        out[key.strip().replace("-", "_")] = _parse_scalar(value.strip())
    return out
