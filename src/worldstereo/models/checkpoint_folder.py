"""Crash-safe writing and consistent reading of checkpoint folders.

A checkpoint is a folder of several files (``config.json``, ``model.safetensors``, component
sub-folders...). Replacing several files is not atomic, so a save runs as a small transaction whose
single commit point is one directory rename. For ``write_checkpoint_folder(folder, writer)``:

1. **recover** — a previous save of ``folder`` that was interrupted after its commit point (a
   ``.worldstereo-commit-<id>`` sub-folder exists) is finished first; interrupted saves before
   their commit point (``.worldstereo-partial-<id>``) and retired copies (``.worldstereo-trash-<id>``)
   are deleted.
2. **stage** — ``writer(staging)`` writes the complete new checkpoint into
   ``folder/.worldstereo-partial-<id>/``; every file is flushed to disk (``fsync``) and a manifest
   :data:`MANIFEST_FILE` listing every file with its size is added.
3. **commit** — the staging folder is renamed to ``.worldstereo-commit-<id>`` (one atomic rename).
   From this instant on, readers load the new checkpoint from there.
4. **install** — each file is hard-linked (copied where links are not supported) to a temporary
   name next to its final place and renamed over it; files listed by the previous manifest that
   the new save does not write are removed; the manifest is installed last.
5. **retire** — the commit folder is renamed to ``.worldstereo-trash-<id>`` and deleted.

Readers (:func:`readable_folder`) load from a commit folder when one exists and from ``folder``
otherwise, so at every instant the path holds the complete old checkpoint (until the commit) or
the complete new one (from the commit on); a mix is never read. :func:`verify_manifest` checks that
every listed file is present with its size (a folder copied partially or modified by hand is
reported instead of being loaded).

Only files this module wrote are ever overwritten or deleted: files of the folder that no manifest
lists (a user's ``thesis.txt``) are left alone, and its own temporary names are specific
(``.worldstereo-partial-<32 hex>``, ``.<name>.worldstereo-tmp-<32 hex>``...). Concurrent saves to
one folder are not supported; a load that overlaps a save notices it (:func:`folder_state` changes)
and is reported instead of returning a mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors import SafetensorError

from worldstereo.config_checks import read_json_file
from worldstereo.io.paths import as_path, ensure_folder

__all__ = [
    "CheckpointError",
    "MANIFEST_FILE",
    "write_checkpoint_folder",
    "readable_folder",
    "read_manifest",
    "verify_manifest",
    "folder_state",
    "owning_folder",
    "recover_folder",
]

logger = logging.getLogger(__name__)

#: Manifest written last by every save: ``{"format", "version", "save_id", "generation",
#: "files": {relative POSIX path: size in bytes}}``.
MANIFEST_FILE = "worldstereo_manifest.json"
MANIFEST_FORMAT = "worldstereo-manifest"
MANIFEST_VERSION = 1
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_MAX_MANIFEST_FILES = 100_000

_PARTIAL = ".worldstereo-partial-"
_COMMIT = ".worldstereo-commit-"
_TRASH = ".worldstereo-trash-"
_TMP_TAG = ".worldstereo-tmp-"
_ID = r"[0-9a-f]{32}"
_OWN_DIR = re.compile(rf"^\.worldstereo-(partial|commit|trash)-({_ID})$")
_OWN_TMP = re.compile(rf"^\..+\.worldstereo-tmp-{_ID}$")
# leftovers of the earlier (format 1) writer: sibling folders and in-folder temporary files
_LEGACY_TMP_FILE = re.compile(r"^\.(model\.safetensors|config\.json)\.tmp\d+$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match the model (keys, shapes, sizes, values) or is
    incomplete; the message names the file."""


# ----------------------------------------------------------------------------- small file helpers
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (new/renamed names) to disk; a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _check_relative(rel: Any, where: str) -> PurePosixPath:
    """A manifest entry must be a plain relative POSIX path inside the folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise CheckpointError(f"{where}: invalid file name {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or ":" in p.parts[0] \
            or rel != p.as_posix():
        raise CheckpointError(f"{where}: file name {rel!r} is not a plain relative path inside the folder")
    return p


# ----------------------------------------------------------------------------- manifest
def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed, validated manifest of ``folder`` (None when it has none).

    Raises:
        CheckpointError: the manifest exists but is not a valid manifest (names the file).
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    where = str(path)
    data = read_json_file(path, error=CheckpointError, what="manifest", max_bytes=_MAX_MANIFEST_BYTES)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{where!r}: not a worldstereo manifest (expected format {MANIFEST_FORMAT!r})")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > MANIFEST_VERSION:
        raise CheckpointError(f"{where!r}: unsupported manifest version {version!r} (this library reads "
                              f"<= {MANIFEST_VERSION})")
    generation, save_id, files = data.get("generation"), data.get("save_id"), data.get("files")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise CheckpointError(f"{where!r}: 'generation' must be a positive integer, got {generation!r}")
    if not isinstance(save_id, str) or not re.fullmatch(_ID, save_id):
        raise CheckpointError(f"{where!r}: 'save_id' must be 32 hexadecimal digits, got {save_id!r}")
    if not isinstance(files, dict) or len(files) > _MAX_MANIFEST_FILES:
        raise CheckpointError(f"{where!r}: 'files' must be an object of at most {_MAX_MANIFEST_FILES} "
                              f"file sizes")
    for rel, size in files.items():
        _check_relative(rel, where)
        if rel == MANIFEST_FILE:
            raise CheckpointError(f"{where!r}: the manifest lists itself")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise CheckpointError(f"{where!r}: size of {rel!r} must be an integer >= 0, got {size!r}")
    return data


def verify_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Check that every file listed by the manifest of ``folder`` exists with its size.

    Returns:
        the manifest, or None for a folder without one (reference layout, older saves).
    Raises:
        CheckpointError: a listed file is missing or has another size — the folder is incomplete
            (e.g. copied partially) or was modified after it was saved.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    problems = []
    for rel, size in manifest["files"].items():
        path = folder / rel
        try:
            actual = path.stat().st_size if path.is_file() else None
        except OSError:
            actual = None
        if actual is None:
            problems.append(f"{rel} is missing")
        elif actual != size:
            problems.append(f"{rel} has {actual} bytes, the manifest says {size}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointError(
            f"{str(folder)!r} is incomplete or was modified after it was saved ({MANIFEST_FILE}): {shown}. "
            f"Save the model again, or delete {MANIFEST_FILE} to load the files as they are.")
    return manifest


def _commit_folders(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if p.name.startswith(_COMMIT) and _OWN_DIR.match(p.name) and p.is_dir()
                  and not p.is_symlink())


def _generation(folder: Path) -> int:
    try:
        manifest = read_manifest(folder)
    except CheckpointError:
        return 0
    return int(manifest["generation"]) if manifest else 0


def readable_folder(folder: str | os.PathLike) -> Path:
    """Where the current checkpoint of ``folder`` is: the newest commit folder of a save that was
    interrupted after its commit point (complete by construction), else ``folder`` itself."""
    folder = Path(folder)
    commits = _commit_folders(folder)
    if not commits:
        return folder
    newest = max(commits, key=lambda p: (_generation(p), p.name))
    logger.info("%s: a save was interrupted after its commit point; reading its complete copy %s "
                "(the next save to this folder finishes it)", folder, newest.name)
    return newest


def owning_folder(path: str | os.PathLike) -> Path:
    """The checkpoint folder ``path`` belongs to: the parent of a commit folder, else ``path``."""
    path = Path(path)
    m = _OWN_DIR.match(path.name)
    return path.parent if m and m.group(1) == "commit" else path


def folder_state(folder: str | os.PathLike) -> tuple[Any, ...]:
    """A token that changes whenever a save commits to or finishes in ``folder`` (commit folders
    present, save id of the installed manifest); compare before and after a load."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except CheckpointError:
        manifest = None
    return (tuple(p.name for p in _commit_folders(folder)), manifest["save_id"] if manifest else None)


# ----------------------------------------------------------------------------- writing
def _list_files(root: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``root`` (no symlinks followed)."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                raise CheckpointError(f"{str(path)!r}: checkpoint writers must write regular files")
            out[path.relative_to(root).as_posix()] = path.stat().st_size
    return out


def _check_destinations(folder: Path, files: Mapping[str, int]) -> None:
    """Every file to install must land inside ``folder`` (no symbolic link to a folder on the way)
    and must not replace a directory."""
    for rel in files:
        for anc in reversed(PurePosixPath(rel).parents):
            if str(anc) == ".":
                continue
            p = folder / anc
            if p.is_symlink():
                raise CheckpointError(f"{str(p)!r} is a symbolic link; the checkpoint is written only inside "
                                      f"{str(folder)!r}, not through links")
            if p.exists() and not p.is_dir():
                raise CheckpointError(f"{str(p)!r} is a file; the checkpoint needs a folder there")
        dst = folder / rel
        if dst.is_dir() and not dst.is_symlink():
            raise CheckpointError(f"{str(dst)!r} is a directory; the checkpoint needs a file there")


def _link_or_copy(src: Path, dst: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                             errno.EACCES, errno.ENOSYS):
            raise
        shutil.copyfile(src, dst)
        _fsync_file(dst)


def _install(folder: Path, commit: Path, manifest: Mapping[str, Any]) -> None:
    """Put the files of ``commit`` in place in ``folder`` (idempotent: rerun after a crash)."""
    try:
        old = read_manifest(folder)
    except CheckpointError as exc:
        logger.warning("%s; files it lists are not removed", exc)
        old = None
    save_id = manifest["save_id"]
    files: Mapping[str, int] = manifest["files"]
    touched: set[Path] = {folder}
    for rel in sorted(files):
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}{_TMP_TAG}{save_id}"
        _link_or_copy(commit / rel, tmp)
        os.replace(tmp, dst)
        touched.add(dst.parent)
    if old is not None:
        stale = sorted(set(old["files"]) - set(files), reverse=True)
        for rel in stale:
            path = folder / rel
            if path.is_file() or path.is_symlink():
                path.unlink()
            touched.add(path.parent)
        for rel in stale:  # folders left empty by the removal (deepest first; never a non-empty one)
            for anc in PurePosixPath(rel).parents:
                if str(anc) == ".":
                    break
                with contextlib.suppress(OSError):
                    (folder / anc).rmdir()
    for d in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        if d.is_dir():
            _fsync_dir(d)
    tmp = folder / f".{MANIFEST_FILE}{_TMP_TAG}{save_id}"
    _link_or_copy(commit / MANIFEST_FILE, tmp)
    os.replace(tmp, folder / MANIFEST_FILE)
    _fsync_dir(folder)


def _retire(folder: Path, own_dir: Path) -> None:
    match = _OWN_DIR.match(own_dir.name)
    assert match is not None
    trash = folder / f"{_TRASH}{match.group(2)}"
    if own_dir != trash:
        os.replace(own_dir, trash)
        _fsync_dir(folder)
    shutil.rmtree(trash, ignore_errors=True)


def recover_folder(folder: str | os.PathLike) -> None:
    """Finish or remove what interrupted saves left in ``folder``: commit folders are installed
    (oldest generation first), partial and trash folders and this module's temporary files are
    deleted. Nothing else is touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for commit in sorted(_commit_folders(folder), key=lambda p: (_generation(p), p.name)):
        try:
            manifest = read_manifest(commit)
        except CheckpointError:
            manifest = None
        if manifest is None or any(not (commit / rel).is_file() for rel in manifest["files"]):
            logger.warning("%s: removing an unusable commit folder %s", folder, commit.name)
        else:
            logger.info("%s: finishing an interrupted save (%s)", folder, commit.name)
            _install(folder, commit, manifest)
        _retire(folder, commit)
    for entry in list(folder.iterdir()):
        m = _OWN_DIR.match(entry.name)
        if m and m.group(1) in ("partial", "trash"):
            if entry.is_dir() and not entry.is_symlink():
                _retire(folder, entry)
            else:
                entry.unlink()
        elif (_OWN_TMP.match(entry.name) or _LEGACY_TMP_FILE.match(entry.name)) and entry.is_file():
            entry.unlink()


def _remove_temporaries(folder: Path, files: Mapping[str, int]) -> None:
    """Delete this module's temporary files next to the checkpoint's files (left by a crash between
    a link and its rename)."""
    dirs = {(folder / rel).parent for rel in files}
    for d in dirs:
        if d == folder or not d.is_dir():
            continue
        for entry in d.iterdir():
            if _OWN_TMP.match(entry.name) and entry.is_file():
                entry.unlink()


def _remove_legacy_siblings(folder: Path) -> None:
    """Hidden sibling folders left by the earlier writer (``.<name>.tmp-<12 hex>`` while writing,
    ``.<name>.old-<12 hex>`` while swapping) once a new save of ``folder`` is complete."""
    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.(tmp|old)-[0-9a-f]{{12}}$")
    with contextlib.suppress(OSError):
        for entry in folder.parent.iterdir():
            if pattern.match(entry.name) and entry.is_dir() and not entry.is_symlink():
                logger.info("removing %s, left by an interrupted save of %s", entry, folder)
                shutil.rmtree(entry, ignore_errors=True)


def write_checkpoint_folder(folder: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write a checkpoint into ``folder`` as one crash-safe transaction (see the module docstring).

    Args:
        folder: destination (created if needed). Files in it that no earlier save listed are kept.
        writer: ``writer(staging)`` writes the complete checkpoint into the empty folder ``staging``
            (regular files only; it must not write :data:`MANIFEST_FILE`).

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.
    Raises:
        TypeError / ValueError: ``folder`` is not a path, is empty, or is (or lies under) an existing
            file (:class:`~worldstereo.errors.PathKindError`); CheckpointError: a file would land outside ``folder``
            or replace a directory (checked before the commit point); whatever ``writer`` raises
            (the folder is then unchanged and the staging copy removed), except that an I/O failure
            reported by safetensors (a full disk) is raised as an ``OSError`` with its errno, naming ``folder``.
    """
    folder = ensure_folder(Path(as_path(folder, "folder")).expanduser(), "folder")
    recover_folder(folder)
    try:
        old = read_manifest(folder)
    except CheckpointError:
        old = None
    save_id = uuid.uuid4().hex
    staging = folder / f"{_PARTIAL}{save_id}"
    staging.mkdir()
    try:
        try:
            writer(staging)
        except SafetensorError as exc:  # an I/O failure (a full disk) surfaces as an OSError with its errno
            match = re.search(r"os error (\d+)", str(exc))
            if match is None:
                raise
            code = int(match.group(1))
            raise OSError(code, os.strerror(code), str(folder)) from exc
        if (staging / MANIFEST_FILE).exists():
            raise CheckpointError(f"writer: must not write {MANIFEST_FILE}")
        files = _list_files(staging)
        _check_destinations(folder, files)
        for rel in files:
            _fsync_file(staging / rel)
        for dirpath, _, _ in os.walk(staging):
            _fsync_dir(Path(dirpath))
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "save_id": save_id,
                    "generation": (old["generation"] + 1) if old else 1, "files": files}
        _write_json(staging / MANIFEST_FILE, manifest)
        _fsync_dir(staging)
        commit = folder / f"{_COMMIT}{save_id}"
        os.replace(staging, commit)  # the commit point
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(folder, commit, manifest)
    _retire(folder, commit)
    _remove_temporaries(folder, files)
    _remove_legacy_siblings(folder)
    return folder
