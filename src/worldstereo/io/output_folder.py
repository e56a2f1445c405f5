"""Transactional output folders: a folder holds the complete old result or the complete new one.

:func:`output_folder` is how every ``worldstereo`` command writes ``--out``::

    with output_folder("results/run1", owner="render") as staged:
        write_everything_into(staged.path)      # a hidden folder next to the target
    # here results/run1 holds exactly the new files; before, exactly the old ones

Protocol:

1. **Before any work** the target is checked: it must not be an existing file; an existing folder
   must be empty or hold the result of an earlier run of the *same* command (recorded in its
   manifest ``.worldstereo-output.json``: every file must be listed there with its size and
   SHA-256) — any other content (the user's files, another command's result, files added or edited
   after the earlier run, links) is refused with :class:`OutputFolderError` and left
   untouched, never deleted; the parent folder (created if needed) and the target must be writable.
   Leftovers of interrupted earlier runs (hidden ``.<name>.<hash>.wsout-*`` folders next to the
   target, whose process is gone) are removed here.
2. The staging folder ``.<name>.<hash>.wsout-stage-<pid>-<random>`` is created next to the target
   (same file system, so the final step is a rename) and handed to the caller.
3. On success the manifest (every file with its size and SHA-256) is written into the staging
   folder, the files are flushed to disk, and the staging folder and the target are exchanged in
   **one atomic step**: ``renameat2(RENAME_EXCHANGE)`` on Linux, a plain ``rename`` when there is no
   old folder. The old folder (now at the staging path) is then deleted.
4. On an exception (or :meth:`StagedOutput.discard`) the staging folder is deleted; the target is
   untouched.

A kill at any instant therefore leaves the target either as it was or complete and new; at most a
hidden leftover folder remains, which the next run next to the same target removes. Where
``RENAME_EXCHANGE`` is unavailable (not Linux, or a file system without it) the exchange is two
renames (old folder aside, new folder in); a kill between them leaves no target but the old folder
aside as ``.wsout-old-*``, which the next run moves back before doing anything else.

The target folder is replaced by a new directory (a new inode): a shell whose working directory
was the old folder has to ``cd`` into it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import as_path

__all__ = ["MANIFEST_NAME", "OutputFolderError", "StagedOutput", "check_output_target", "output_folder",
           "prepare_output_folder", "read_manifest"]

logger = logging.getLogger(__name__)

#: the manifest every committed output folder holds (hidden; lists the files and their hashes)
MANIFEST_NAME = ".worldstereo-output.json"
MANIFEST_FORMAT = "worldstereo.output_folder"
_TAG = ".wsout-"
_NAME_MAX = 255  # longest file name (bytes) on the usual file systems
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputFolderError(ValueError):
    """The output folder cannot be used: an existing file, foreign content, not writable, ..."""


@dataclass
class StagedOutput:
    """A staging folder whose content replaces ``target`` on :meth:`commit`.

    Attributes:
        target: the final folder (absolute, symbolic links resolved).
        path: the staging folder to write into (a hidden sibling of ``target``).
        owner: the command (or other producer) recorded in the manifest.
        info: extra JSON-serialisable data stored in the manifest.
    """

    target: Path
    path: Path
    owner: str
    info: dict[str, Any] = field(default_factory=dict)
    option: str = "--out"
    replace_changed: bool = False
    _discarded: bool = False
    _done: bool = False

    def discard(self) -> None:
        """Do not commit: the staging folder is deleted when the ``with`` block ends."""
        self._discarded = True

    def final_path(self, path: str | os.PathLike[str]) -> Path:
        """Where ``path`` (inside the staging folder) will be after the commit."""
        p = Path(path)
        try:
            return self.target / p.relative_to(self.path)
        except ValueError:
            return p

    # ------------------------------------------------------------------------------- commit
    def commit(self) -> Path:
        """Write the manifest and put the staging folder in place of the target (atomic exchange).

        Returns:
            The target folder.

        Raises:
            OutputFolderError: foreign files appeared in the target during the run (the new result
                is then kept in a visible ``<name>.worldstereo-new-*`` folder next to it).
        """
        if self._done:
            raise RuntimeError("StagedOutput: already committed or aborted")
        self._done = True
        _write_manifest(self.path, self.owner, self.info)
        if os.path.lexists(self.target):
            try:
                _check_existing(self.target, self.owner, self.option, self.replace_changed)
            except OutputFolderError as exc:
                keep = _unique_sibling(self.target, ".worldstereo-new")
                os.rename(self.path, keep)
                raise OutputFolderError(f"{exc}; the new result was kept in {str(keep)!r}") from None
            if not _exchange(self.path, self.target):
                old = self.target.parent / f"{_prefix(self.target)}old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(self.target, old)   # a kill here: the next run moves `old` back
                os.rename(self.path, self.target)
                _fsync_dir(self.target.parent)
                _remove_tree(old)
                return self.target
        else:
            os.rename(self.path, self.target)
        _fsync_dir(self.target.parent)
        _remove_tree(self.path)  # after an exchange: the old result
        return self.target

    def abort(self) -> None:
        """Delete the staging folder (the target is untouched)."""
        if not self._done:
            self._done = True
            _remove_tree(self.path)


def _prefix(target: Path) -> str:
    name = target.name
    short = name.encode("utf-8", "surrogateescape")[:48].decode("utf-8", "ignore")
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f".{short}.{digest}{_TAG}"


def _unique_sibling(target: Path, tag: str) -> Path:
    k = 1
    while True:
        cand = target.parent / f"{target.name}{tag}-{k}"
        if not os.path.lexists(cand):
            return cand
        k += 1


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False when the platform / file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_tree(path: Path) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        logger.debug("could not remove %s: %s", p, exc)

    if os.path.islink(path) or os.path.isfile(path):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    if os.path.isdir(path):
        shutil.rmtree(path, onerror=onerror)  # noqa: B028 - onerror kept for Python 3.10/3.11


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap, side-effect free check; such leftovers are kept
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_leftovers(target: Path) -> None:
    """Remove stale staging / old folders of ``target``; restore an old folder when the target is gone."""
    parent, prefix = target.parent, _prefix(target)
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for n in sorted(names):
        kind, _, rest = n[len(prefix):].partition("-")
        pid_text = rest.split("-", 1)[0]
        if kind not in ("stage", "old") or not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        path = parent / n
        if kind == "old" and not os.path.lexists(target):
            logger.warning("%s: restoring the previous result from an interrupted run (%s)", target, n)
            with contextlib.suppress(OSError):
                os.rename(path, target)
                continue
        logger.info("removing the leftover %s of an interrupted run", path)
        _remove_tree(path)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a committed output folder, or None when there is none (or it is unreadable)."""
    p = Path(folder) / MANIFEST_NAME
    try:
        if not p.is_file() or p.stat().st_size > (64 << 20):
            return None
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        return None
    return doc


def _check_existing(target: Path, owner: str, option: str, replace_changed: bool = False) -> None:
    """Refuse a target that is not a folder, or whose content is not an earlier result of ``owner``
    (``replace_changed``: files the manifest lists are the owner's even if their content changed)."""
    if not target.is_dir():
        raise OutputFolderError(f"{option}: {str(target)!r} exists and is not a folder")
    entries = sorted(n for n in os.listdir(target) if n != MANIFEST_NAME)
    if not entries:
        return
    manifest = read_manifest(target)
    if manifest is None:
        shown = ", ".join(repr(n) for n in entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise OutputFolderError(
            f"{option}: {str(target)!r} already contains files that worldstereo did not write ({shown}); "
            "choose a new or empty folder (nothing was changed)"
        )
    if manifest.get("owner") != owner:
        raise OutputFolderError(
            f"{option}: {str(target)!r} holds the result of `worldstereo {manifest.get('owner')}`, not of "
            f"`worldstereo {owner}`; choose another folder (nothing was changed)"
        )
    foreign = _not_owned(target, manifest["files"], check_content=not replace_changed)
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"{option}: {str(target)!r} holds an earlier result plus files worldstereo did not write or that "
            f"changed since ({shown}); move them away or choose another folder (nothing was changed)"
        )


def _not_owned(target: Path, listed: dict[str, Any], *, check_content: bool = True) -> list[str]:
    """The paths under ``target`` (relative, ``/``-separated) that are not exactly what the manifest
    lists: files it does not list, files whose size or SHA-256 differ (edited or replaced since the
    run — the user's work now), symbolic links and special files. Only a folder holding nothing but
    unchanged files of an earlier result may be replaced (``check_content=False``: listed files count
    as the result's whatever their content — for callers that detect damaged results themselves)."""
    foreign: list[str] = []
    for root, dirs, names in os.walk(target):
        dirs.sort()
        for n in sorted(dirs):
            full = Path(root) / n
            if full.is_symlink():
                foreign.append(full.relative_to(target).as_posix())
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for n in sorted(names):
            full = Path(root) / n
            rel = full.relative_to(target).as_posix()
            if rel == MANIFEST_NAME:
                continue
            info = listed.get(rel)
            try:
                st = full.lstat()
            except OSError:
                continue
            if not isinstance(info, dict) or not stat.S_ISREG(st.st_mode):
                foreign.append(rel)
            elif check_content and (info.get("size") != st.st_size or info.get("sha256") != _sha256(full)):
                foreign.append(rel)
            if len(foreign) > 20:
                return foreign
    return foreign


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _write_manifest(folder: Path, owner: str, info: dict[str, Any]) -> None:
    files: dict[str, Any] = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in sorted(names):
            full = Path(root) / n
            rel = full.relative_to(folder).as_posix()
            if rel == MANIFEST_NAME or not full.is_file() or full.is_symlink():
                continue
            h = hashlib.sha256()
            with open(full, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
                with contextlib.suppress(OSError):
                    os.fsync(fh.fileno())
            files[rel] = {"size": full.stat().st_size, "sha256": h.hexdigest()}
    doc = {"format": MANIFEST_FORMAT, "version": 1, "owner": owner, **info, "files": files}
    path = folder / MANIFEST_NAME
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)


def _resolve_target(target: Any, option: str) -> Path:
    try:  # a path type, not empty, no NUL character
        text = str(as_path(target, option))
    except (TypeError, ValueError) as exc:
        raise OutputFolderError(str(exc)) from None
    path = Path(os.path.abspath(os.path.expanduser(text)))
    # resolve links of the target and its parents: the folder the caller named is where its
    # link points (a link itself is never replaced by a folder)
    path = Path(os.path.realpath(path))
    if path.parent == path or not path.name:
        raise OutputFolderError(f"{option}: {text!r} is a file-system root; choose a folder inside it")
    for part in path.parts[1:]:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise OutputFolderError(f"{option}: the name {part[:40]!r}... has {len(os.fsencode(part))} bytes; file "
                                    f"systems allow at most {_NAME_MAX}")
    if len(os.fsencode(str(path))) > 4000:
        raise OutputFolderError(f"{option}: the path is {len(os.fsencode(str(path)))} bytes long; too long")
    return path


def check_output_target(target: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check a folder that will be written *into* (not replaced, e.g. ``worldstereo batch``'s
    ``--out``), without changing anything: a usable path (not empty, no NUL, not a file-system root,
    names within the file-system limits), not an existing file, and writable — or creatable in its
    nearest existing parent (tried with a temporary folder that is removed at once).

    Returns:
        The absolute path, links resolved.

    Raises:
        OutputFolderError: naming ``option``.
    """
    path = _resolve_target(target, option)
    if os.path.lexists(path):
        if not path.is_dir():
            raise OutputFolderError(f"{option}: {str(path)!r} exists and is not a folder")
        probe_in = path
    else:
        probe_in = path.parent
        while not os.path.lexists(probe_in):
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise OutputFolderError(f"{option}: cannot create {str(path)!r}: {str(probe_in)!r} is a file")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".worldstereo-probe-", dir=probe_in))
    except OSError as exc:
        raise OutputFolderError(f"{option}: cannot write into {str(probe_in)!r}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        probe.rmdir()
    return path


def prepare_output_folder(target: str | os.PathLike[str], *, owner: str, option: str = "--out",
                          info: dict[str, Any] | None = None, replace_changed: bool = False) -> StagedOutput:
    """Check ``target`` and create its staging folder (step 1 and 2 of the protocol).

    Raises:
        OutputFolderError: ``target`` is an existing file, holds foreign content, is not
            writable, or its parent cannot be created.
    """
    path = _resolve_target(target, option)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputFolderError(f"{option}: cannot create {str(parent)!r}: a file is in the way") from None
    except OSError as exc:
        raise OutputFolderError(f"{option}: cannot create the folder {str(parent)!r}: {exc.strerror or exc}") from None
    if not parent.is_dir():
        raise OutputFolderError(f"{option}: {str(parent)!r} is not a folder")
    _clean_leftovers(path)
    mode = 0o777 & ~_umask()
    if os.path.lexists(path):
        _check_existing(path, owner, option, replace_changed)
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputFolderError(f"{option}: the folder {str(path)!r} is not writable")
        mode = stat.S_IMODE(path.stat().st_mode)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{option}: cannot write into {str(parent)!r} (permission denied), where the "
                                f"new {path.name!r} is assembled")
    stage = parent / f"{_prefix(path)}stage-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        stage.mkdir()
        os.chmod(stage, mode)
    except OSError as exc:
        _remove_tree(stage)
        raise OutputFolderError(f"{option}: cannot create a folder in {str(parent)!r}: {exc.strerror or exc}") from None
    return StagedOutput(target=path, path=stage, owner=owner, info=dict(info or {}), option=option,
                        replace_changed=replace_changed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def output_folder(target: str | os.PathLike[str], *, owner: str, option: str = "--out",
                  info: dict[str, Any] | None = None, replace_changed: bool = False) -> Iterator[StagedOutput]:
    """Context manager: write into ``staged.path``; it replaces ``target`` when the block succeeds.

    See the module docstring for the protocol and its guarantees.

    Args:
        target: the output folder (created if needed, with its parents).
        owner: name of the producer recorded in the manifest (the CLI command). An existing
            target is only replaced when it holds an earlier result of the same owner.
        option: the option / parameter name used in error messages.
        info: extra JSON data for the manifest.
        replace_changed: files of an earlier result whose content changed since (edited, or damaged)
            are replaced too; by default they count as the user's and the target is refused. For
            callers that check their earlier results themselves (``worldstereo batch``).

    Raises:
        OutputFolderError: the target cannot be used (raised before the block runs).
    """
    staged = prepare_output_folder(target, owner=owner, option=option, info=info, replace_changed=replace_changed)
    try:
        yield staged
    except BaseException:
        staged.abort()
        raise
    if staged._discarded:
        staged.abort()
    else:
        try:
            staged.commit()
        except BaseException:
            if os.path.isdir(staged.path):
                _remove_tree(staged.path)
            raise
