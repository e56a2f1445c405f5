"""Type and bounds checks of configuration values read from files or given by callers.

Every check names the field (``transformer.num_layers``) and what was expected, and raises

* :class:`ConfigTypeError` (a ``TypeError`` *and* a ``ValueError``) for a value of the wrong type —
  booleans are never accepted as numbers, floats never as integers;
* :class:`ConfigError` (a ``ValueError``) for a value of the right type outside its bounds, a NaN
  or an infinity, or a string that is not one of the allowed choices.

The checks return the value so that they can be used inline. They exist so that a configuration
file can never make the library allocate without bound: every size has a finite upper limit,
checked before anything is built.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "check_int",
    "check_float",
    "check_bool",
    "check_str",
    "check_choice",
    "read_json_file",
    "MAX_JSON_BYTES",
]

#: Largest JSON configuration file read (real ones are a few kB).
MAX_JSON_BYTES = 16 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value has the wrong type (also a ``TypeError``)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, lo: int, hi: int, *, allow_none: bool = False) -> Any:
    """``value`` is an ``int`` (not a bool) with ``lo <= value <= hi`` (or None if ``allow_none``)."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{name}: expected an integer in [{lo}, {hi}]"
                              f"{' or null' if allow_none else ''}, got {type(value).__name__} {_show(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: expected an integer in [{lo}, {hi}], got {_show(value)}")
    return value


def check_float(name: str, value: Any, lo: float, hi: float, *, lo_exclusive: bool = False,
                allow_none: bool = False) -> Any:
    """``value`` is a finite ``int``/``float`` (not a bool) in ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_exclusive``), or None if ``allow_none``."""
    if value is None and allow_none:
        return value
    interval = f"{'(' if lo_exclusive else '['}{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name}: expected a number in {interval}, got {type(value).__name__} {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number in {interval}, got {value!r}")
    if not (lo < value if lo_exclusive else lo <= value) or not value <= hi:
        raise ConfigError(f"{name}: expected a number in {interval}, got {_show(value)}")
    return value


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` is ``True`` or ``False`` (or None if ``allow_none``); 0/1 are refused."""
    if value is None and allow_none:
        return value
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{name}: expected true or false{' or null' if allow_none else ''}, "
                              f"got {type(value).__name__} {_show(value)}")
    return value


def check_str(name: str, value: Any, max_length: int, *, allow_none: bool = False) -> Any:
    """``value`` is a ``str`` of at most ``max_length`` characters (or None if ``allow_none``)."""
    if value is None and allow_none:
        return value
    if not isinstance(value, str):
        raise ConfigTypeError(f"{name}: expected a string{' or null' if allow_none else ''}, "
                              f"got {type(value).__name__} {_show(value)}")
    if len(value) > max_length:
        raise ConfigError(f"{name}: expected at most {max_length} characters, got {len(value)}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` is one of ``choices`` (compared by type and value, so ``1`` never matches ``True``)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {_show(value)}")
    return value


def read_json_file(path: str | os.PathLike, *, error: type[ValueError] = ConfigError, what: str = "JSON file",
                   max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file of at most ``max_bytes``; every problem (too large, not UTF-8, invalid
    JSON, nesting too deep for the parser) is an ``error`` naming the file. ``NaN``/``Infinity``
    literals are parsed (the field checks refuse them, naming the field)."""
    p = Path(path)
    try:
        if p.stat().st_size > max_bytes:
            raise error(f"{str(p)!r}: {what} larger than {max_bytes} bytes")
        with open(p, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise error(f"{str(p)!r}: {what} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{str(p)!r}: {what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"{str(p)!r}: {what} nested too deeply") from exc
