"""Exceptions for bad input that also keep their conventional built-in type.

Bad input always raises a ``ValueError`` (or ``TypeError``) subclass whose message names the
parameter, option or file and what was expected (``docs/reliability.md``). Some bad inputs are
conventionally reported with another built-in type — a path that does not exist
(``FileNotFoundError``), a folder where a file is expected (``IsADirectoryError``), a request the
machine or the current state cannot satisfy (``RuntimeError``: CUDA asked for where there is none,
parallelism without a process group). The classes here are both: code that catches
``FileNotFoundError`` or ``RuntimeError`` keeps working, and code that catches ``ValueError`` — the
CLI's "bad input, exit status 2", or a caller's validation handler — sees every bad input.
"""

from __future__ import annotations

__all__ = ["MissingPathError", "PathKindError", "UnavailableError"]


class MissingPathError(FileNotFoundError, ValueError):
    """A path given as input does not exist (a ``FileNotFoundError`` and a ``ValueError``).

    Raised with one message argument that names the parameter and the path, e.g.
    ``MissingPathError("--depth: depth file 'd.npy' does not exist")``.
    """


class PathKindError(IsADirectoryError, ValueError):
    """A path is the wrong kind of thing: a folder where a file is expected, a file or device where a
    folder is expected (an ``IsADirectoryError`` and a ``ValueError``)."""


class UnavailableError(RuntimeError, ValueError):
    """The request cannot be satisfied here — a device this machine does not have, parallelism
    without a process group, a placement already applied (a ``RuntimeError`` and a ``ValueError``;
    the message says what to do instead)."""
