"""Where a WorldStereo checkpoint's files are: resolution of ``WorldStereo.from_pretrained`` inputs.

Four layouts are accepted (api.md "Model loading"):

1. the reference checkpoint root: sub-folders ``worldstereo-camera``, ``worldstereo-memory``,
   ``worldstereo-memory-dmd``, each with ``config.json`` + ``model.safetensors`` (``variant`` picks
   one; default ``worldstereo-memory``);
2. one such sub-folder directly;
3. a folder written by ``WorldStereo.save_pretrained`` (marker file ``worldstereo_config.json``;
   every component inside, loads with no network);
4. a Hugging Face Hub id of any of these (downloaded with ``huggingface_hub.snapshot_download``).

For layouts 1, 2 and 4 the Wan base components (text encoder, tokenizer, CLIP image encoder and
processor, VAE, scheduler) come from ``config.json``'s ``base_model`` (a local diffusers Wan2.1 I2V
folder or a Hub id) unless the caller's ``base_model=`` overrides it.

Weights are read from safetensors only; pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``)
are refused unless ``allow_pickle=True``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldstereo.config_checks import ConfigError, check_choice
from worldstereo.models.checkpoint import PICKLE_SUFFIXES
from worldstereo.models.checkpoint_folder import readable_folder, verify_manifest
from worldstereo.models.config import MODEL_TYPES, read_config_json
from worldstereo.errors import MissingPathError

logger = logging.getLogger(__name__)

__all__ = [
    "MARKER_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_VARIANT",
    "COMPONENT_FOLDERS",
    "PICKLE_SUFFIXES",
    "ResolvedCheckpoint",
    "resolve_checkpoint",
    "resolve_base_model",
    "read_json",
]

#: Marker file of a folder written by ``WorldStereo.save_pretrained``.
MARKER_FILE = "worldstereo_config.json"
FORMAT_NAME = "worldstereo"
FORMAT_VERSION = 1
DEFAULT_VARIANT = "worldstereo-memory"
#: Sub-folders of a diffusers Wan I2V base model (and of our own saved folders).
COMPONENT_FOLDERS = ("transformer", "text_encoder", "tokenizer", "image_encoder", "image_processor", "vae",
                     "scheduler")
_PICKLE_PATTERNS = tuple(f"*{s}" for s in PICKLE_SUFFIXES)


@dataclass
class ResolvedCheckpoint:
    """A checkpoint resolved to local files.

    Attributes:
        directory: folder holding ``config.json`` and the transformer weights.
        variant: model type (``worldstereo-camera`` / ``-memory`` / ``-memory-dmd``).
        config: parsed ``config.json`` (reference schema).
        is_own_format: True for a folder written by ``save_pretrained`` (components inside).
        marker: parsed ``worldstereo_config.json`` (own format) or None.
    """

    directory: Path
    variant: str
    config: dict[str, Any]
    is_own_format: bool
    marker: dict[str, Any] | None = field(default=None)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object; errors (:class:`~worldstereo.config_checks.ConfigError`, a ValueError)
    name the file."""
    p = Path(path)
    data = read_config_json(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{str(p)!r}: expected a JSON object, got {type(data).__name__}")
    return data


def _has_weights(directory: Path, stem: str = "model") -> bool:
    return any((directory / n).is_file() for n in (f"{stem}.safetensors", f"{stem}.safetensors.index.json")) or any(
        (directory / f"{stem}{s}").is_file() for s in PICKLE_SUFFIXES)


def _is_checkpoint_folder(directory: Path) -> bool:
    return (directory / "config.json").is_file() and _has_weights(directory)


def _check_model_type(directory: Path, found: Any) -> None:
    try:
        check_choice("model_type", found, MODEL_TYPES)
    except ConfigError as exc:
        raise ConfigError(f"{str(directory / 'config.json')!r}: {exc}") from None


def _check_variant(variant: str | None, name: str = "variant") -> None:
    if variant is not None and variant not in MODEL_TYPES:
        raise ValueError(f"{name}: expected one of {list(MODEL_TYPES)}, got {variant!r}")


def _resolve_local(directory: Path, variant: str | None) -> ResolvedCheckpoint:
    # a folder written by save_pretrained: the complete copy of an interrupted save if there is one,
    # and every file its manifest lists present with its size (never a mix of two saves)
    directory = readable_folder(directory)
    verify_manifest(directory)
    marker_path = directory / MARKER_FILE
    if marker_path.is_file():
        marker = read_json(marker_path)
        if marker.get("format") != FORMAT_NAME:
            raise ConfigError(f"{str(marker_path)!r}: not a worldstereo folder (format={marker.get('format')!r})"[:300])
        version = marker.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
            raise ConfigError(f"{str(marker_path)!r}: unsupported format_version {version!r} "
                              f"(this library reads <= {FORMAT_VERSION})"[:300])
        if not (directory / "config.json").is_file():
            raise MissingPathError(f"{str(directory)!r}: no config.json next to {MARKER_FILE}")
        config = read_json(directory / "config.json")
        found = config.get("model_type")
        _check_model_type(directory, found)
        if variant is not None and found != variant:
            raise ValueError(f"variant: {str(directory)!r} holds {found!r}, not {variant!r}")
        return ResolvedCheckpoint(directory, str(found), config, True, marker)
    if _is_checkpoint_folder(directory):
        config = read_json(directory / "config.json")
        found = config.get("model_type")
        _check_model_type(directory, found)
        if variant is not None and found != variant:
            raise ValueError(f"variant: {str(directory)!r} holds {found!r}, not {variant!r}")
        return ResolvedCheckpoint(directory, found, config, False, None)
    present = [v for v in MODEL_TYPES if (directory / v).is_dir()]
    if present:
        chosen = variant or DEFAULT_VARIANT
        if chosen not in present:
            raise MissingPathError(f"variant: {chosen!r} not found in {str(directory)!r}; available: {present}")
        sub = directory / chosen
        if not ((sub / MARKER_FILE).is_file() or _is_checkpoint_folder(sub)):
            raise MissingPathError(f"{str(sub)!r}: expected config.json and model.safetensors")
        return _resolve_local(sub, chosen)
    raise MissingPathError(
        f"name_or_path: {str(directory)!r} is not a WorldStereo checkpoint: expected {MARKER_FILE} "
        f"(save_pretrained folder), config.json + model.safetensors (one variant sub-folder), or "
        f"sub-folders {list(MODEL_TYPES)} (reference checkpoint root)")


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with Hugging Face's allowed characters (never a path that starts with . or /)."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def resolve_checkpoint(name_or_path: str | os.PathLike, variant: str | None = None, *,
                       local_files_only: bool = False, allow_pickle: bool = False) -> ResolvedCheckpoint:
    """Find the checkpoint folder for ``WorldStereo.from_pretrained``.

    Args:
        name_or_path: a local folder (layouts 1-3) or a Hub id ``owner/name`` (layout 4).
        variant: model type to pick from a reference root; checked against the folder otherwise.
        local_files_only: for Hub ids, only use the local Hugging Face cache.
        allow_pickle: also download pickle weight files from the Hub.

    Raises:
        ValueError: bad ``variant`` or inconsistent files; FileNotFoundError: nothing loadable there.
    """
    _check_variant(variant)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path: expected a path or a Hub id, got {type(name_or_path).__name__}")
    if not os.fspath(name_or_path).strip() or "\x00" in os.fspath(name_or_path):
        raise ValueError(f"name_or_path: expected a checkpoint folder or a Hub id 'owner/name', got "
                         f"{os.fspath(name_or_path)!r}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _resolve_local(path, variant)
    if path.exists():
        raise ValueError(f"name_or_path: {str(path)!r} is a file; pass the checkpoint folder")
    name = os.fspath(name_or_path)
    if not _looks_like_hub_id(name):
        raise MissingPathError(f"name_or_path: {name!r} is neither an existing folder nor a Hub id 'owner/name'")
    local = _snapshot(name, local_files_only=local_files_only, allow_pickle=allow_pickle,
                      ignore_folders=[v for v in MODEL_TYPES if v != (variant or DEFAULT_VARIANT)])
    return _resolve_local(local, variant)


def _snapshot(repo_id: str, *, local_files_only: bool, allow_pickle: bool,
              ignore_folders: list[str] | None = None, allow_patterns: list[str] | None = None,
              what: str = "name_or_path") -> Path:
    """``huggingface_hub.snapshot_download`` restricted to what a WorldStereo load needs."""
    from huggingface_hub import snapshot_download

    ignore = [f"{f}/*" for f in (ignore_folders or [])]
    if not allow_pickle:
        ignore += list(_PICKLE_PATTERNS) + [f"*/{p}" for p in _PICKLE_PATTERNS]
    logger.info("Fetching %s from the Hugging Face Hub (local_files_only=%s)", repo_id, local_files_only)
    try:
        return Path(snapshot_download(repo_id, local_files_only=local_files_only, ignore_patterns=ignore or None,
                                      allow_patterns=allow_patterns))
    except Exception as exc:  # network, missing repo, not cached with local_files_only, ...
        raise MissingPathError(f"{what}: could not get {repo_id!r} from the Hugging Face Hub "
                                f"(local_files_only={local_files_only}): {exc}") from exc


def resolve_base_model(base_model: str | os.PathLike, *, local_files_only: bool = False,
                       need_transformer_weights: bool = False) -> Path:
    """Local folder of the diffusers Wan I2V base model (downloaded from the Hub if it is an id).

    The folder must hold the sub-folders ``text_encoder``, ``tokenizer``, ``image_encoder``,
    ``image_processor``, ``vae`` and ``scheduler`` (and ``transformer`` for its config).

    Raises:
        ValueError: empty ``base_model``; FileNotFoundError: not a local folder and not downloadable.
    """
    if not isinstance(base_model, (str, os.PathLike)) or not os.fspath(base_model):
        raise ValueError("base_model: a local diffusers Wan2.1 I2V folder or a Hub id is required "
                         "(config.json's base_model is empty; pass base_model=...)")
    path = Path(base_model).expanduser()
    if path.is_dir():
        return path
    name = os.fspath(base_model)
    if not _looks_like_hub_id(name):
        raise MissingPathError(f"base_model: {name!r} is neither an existing folder nor a Hub id 'owner/name'")
    patterns = [f"{c}/*" for c in COMPONENT_FOLDERS if c != "transformer"] + ["transformer/config.json",
                                                                               "model_index.json"]
    if need_transformer_weights:
        patterns.append("transformer/*")
    return _snapshot(name, local_files_only=local_files_only, allow_pickle=False, allow_patterns=patterns,
                     what="base_model")
