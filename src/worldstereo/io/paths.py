"""Confinement: file names taken from data, and paths that must stay inside a folder.

Names that come from input data (COLMAP image names, WorldMirror camera ids, memory-bank frame
names, names read from a file) never reach the file system as they are. Every exporter turns them
into file names with :func:`sanitize_name` / :func:`unique_names` and builds each output path with
:func:`safe_child`, which refuses any path that would leave the folder the caller named — through
``..``, an absolute name, a separator, or a symbolic link (inside the folder) that points elsewhere.

Sanitising rules (:func:`sanitize_name`): every character other than letters, digits, ``_``, ``-``
and ``.`` (path separators, NUL and other control characters, whitespace, ``<>:"|?*``) becomes
``-``; leading dots and dashes and trailing dots and dashes are removed (no hidden files, no ``..``, no
option-like names, no names Windows cannot store); Windows device names (``CON``, ``NUL``,
``COM1`` ...) get a leading ``_``; names longer than :data:`MAX_NAME_BYTES` UTF-8 bytes are cut and
suffixed with a short hash of the original; an empty result becomes ``unnamed``.
:func:`unique_names` also makes the results unique, ignoring case (``a`` and ``A`` are the same file
on macOS and Windows), by appending ``_1``, ``_2`` ...

What confinement does not cover: another process replacing a folder by a symbolic link while the
library writes (a time-of-check / time-of-use race) — the output folder is assumed to belong to the
user running the library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from worldstereo.errors import PathKindError

__all__ = ["MAX_NAME_BYTES", "as_path", "ensure_folder", "sanitize_name", "unique_names", "safe_child", "safe_children",
           "is_inside"]

logger = logging.getLogger(__name__)

#: longest sanitised name in UTF-8 bytes (file systems allow 255; room is left for suffixes)
MAX_NAME_BYTES = 160

_UNSAFE = re.compile(r"[^\w.\-]+", flags=re.UNICODE)
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def as_path(value: Any, name: str = "path") -> Path:
    """A path argument as a :class:`Path`, refusing what is never a usable path: a non-path type,
    an empty string (which would silently mean the current folder) and NUL characters.

    Raises:
        TypeError: not a ``str`` / ``os.PathLike``.
        ValueError: empty, or holds a NUL character.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file or folder path (str or os.PathLike), got {type(value).__name__}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise ValueError(f"{name}: expected a path, got an empty string (use '.' for the current folder)")
    if "\x00" in text:
        raise ValueError(f"{name}: {text!r} contains a NUL character")
    return Path(text)


def ensure_folder(folder: Any, name: str = "out_dir") -> Path:
    """Create the output folder ``folder`` (with its parents) unless it exists; returns it as a Path.

    Raises:
        PathKindError: ``folder`` (or a parent) is an existing file (an ``IsADirectoryError`` and a
            ``ValueError``).
        ValueError: it cannot be created (permissions, read-only file system, name too long ...).
    """
    path = as_path(folder, name)
    if path.is_dir():
        return path
    if os.path.lexists(path) and not path.is_dir():
        raise PathKindError(f"{name}: {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PathKindError(f"{name}: cannot create the folder {str(path)!r}: a file is in the way") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot create the folder {str(path)!r}: {exc.strerror or exc}") from None
    return path


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def sanitize_name(name: Any, *, what: str = "name") -> str:
    """A safe single file-name component for ``name`` (see the module docstring for the rules).

    Names that are already safe (``frame_0001``, ``0000``, ``view-3.left``) are returned unchanged.

    Args:
        name: a ``str`` (or an ``int``, converted) taken from data.
        what: what the name is, for error messages (``"names[3]"``).

    Raises:
        ValueError: ``name`` is neither a string nor an integer.
    """
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise ValueError(f"{what}: expected a string name, got {type(name).__name__}")
    original = str(name)
    text = unicodedata.normalize("NFC", original)
    text = _UNSAFE.sub("-", text)
    text = text.lstrip(".-").rstrip(". -")
    if not text:
        return "unnamed" if not original else f"unnamed-{_digest(original)}"
    if text.split(".")[0].lower() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        cut = text.encode("utf-8")[:MAX_NAME_BYTES - 9].decode("utf-8", "ignore").rstrip(". ")
        text = f"{cut}-{_digest(original)}"
    return text


def unique_names(names: Iterable[Any], *, what: str = "names") -> list[str]:
    """Sanitise every name (:func:`sanitize_name`) and make the results unique ignoring case.

    A duplicate gets ``_1``, ``_2`` ... appended (the first occurrence keeps its name). A warning
    lists how many names had to change.

    Raises:
        ValueError: a name is neither a string nor an integer.
    """
    out: list[str] = []
    seen: set[str] = set()
    changed: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        safe = sanitize_name(name, what=f"{what}[{i}]")
        base, k = safe, 1
        while safe.lower() in seen:
            safe = f"{base}_{k}"
            k += 1
        seen.add(safe.lower())
        if safe != str(name):
            changed.append((str(name), safe))
        out.append(safe)
    if changed:
        example = ", ".join(f"{a!r} -> {b!r}" for a, b in changed[:3])
        # names like "clip0/0001" (the pipeline's own) change quietly; traversal, absolute or control
        # characters, and collisions, are worth a warning
        loud = any(_suspicious(a) or b.rsplit("_", 1)[0] != sanitize_name(a) for a, b in changed)
        logger.log(logging.WARNING if loud else logging.DEBUG, "%s: %d name(s) changed to safe, unique file names "
                   "(%s%s)", what, len(changed), example, ", ..." if len(changed) > 3 else "")
    return out


def _suspicious(name: str) -> bool:
    parts = re.split(r"[/\\]", name)
    return (not name or name.startswith(("/", "\\", ".", "-")) or ".." in parts or "" in parts
            or any(ord(c) < 32 or c in '<>:"|?*' for c in name) or len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES)


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in ``folder`` or below, after resolving symbolic links of both."""
    real_folder = os.path.realpath(folder)
    real_path = os.path.realpath(path)
    try:
        return os.path.commonpath([real_folder, real_path]) == real_folder
    except ValueError:  # different drives (Windows)
        return False


def _components(part: Any, what: str) -> list[str]:
    if not isinstance(part, (str, os.PathLike)):
        raise ValueError(f"{what}: expected a relative path, got {type(part).__name__}")
    text = os.fspath(part)
    if "\x00" in text:
        raise ValueError(f"{what}: {text!r} contains a NUL character")
    if not text or os.path.isabs(text) or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"{what}: {text!r} is not a relative path inside the output folder")
    comps = [c for c in re.split(r"[/\\]", text)]
    for c in comps:
        if c in ("", ".", ".."):
            raise ValueError(f"{what}: {text!r} has an empty, '.' or '..' component; expected a plain relative path")
    return comps


def safe_child(folder: str | os.PathLike[str], *parts: str | os.PathLike[str], what: str = "path",
               is_folder: bool = False) -> Path:
    """``folder / parts...`` after checking that it stays inside ``folder``.

    Each part is a relative path written by the library (``"images"``, ``"images/0001.png"``);
    names from data must go through :func:`sanitize_name` first. The check resolves symbolic links
    of the folders that already exist, so ``folder/images`` being a link to another place is refused
    too. The last component may be an existing link: the library's atomic writers replace it
    (``os.replace``) rather than write through it. With ``is_folder=True`` (a sub-folder the caller
    will create and fill) the path itself must resolve inside ``folder`` too.

    Returns:
        The joined path (not resolved), for the writer to use.

    Raises:
        ValueError: an absolute part, a ``..`` / empty component, a NUL character, or a path whose
            parent resolves outside ``folder``.
    """
    comps: list[str] = []
    for part in parts:
        comps += _components(part, what)
    if not comps:
        raise ValueError(f"{what}: expected a file name inside {os.fspath(folder)!r}")
    root = Path(folder)
    candidate = root.joinpath(*comps)
    if is_folder and not is_inside(candidate, root):
        raise ValueError(
            f"{what}: the folder {'/'.join(comps)!r} inside {str(root)!r} is a symbolic link to "
            f"{os.path.realpath(candidate)!r}, outside it; refusing to write there"
        )
    if not is_inside(candidate.parent, root):
        raise ValueError(
            f"{what}: {'/'.join(comps)!r} would be written outside {str(root)!r} (a folder on the way is a symbolic "
            f"link to {os.path.realpath(candidate.parent)!r}); refusing"
        )
    return candidate


def safe_children(folder: str | os.PathLike[str], names: Sequence[str], *, subfolder: str | None = None,
                  suffix: str = "", what: str = "names") -> list[Path]:
    """:func:`safe_child` for every name of :func:`unique_names` (``folder/subfolder/<name><suffix>``)."""
    prefix = [subfolder] if subfolder else []
    return [safe_child(folder, *prefix, f"{n}{suffix}", what=f"{what}[{i}]") for i, n in enumerate(names)]
