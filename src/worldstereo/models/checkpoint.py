"""Checkpoint loading/saving for :class:`~worldstereo.models.transformer.WorldStereoTransformer`.

* safetensors only by default; pickle formats (``.bin``, ``.pt``, ``.ckpt``, ``.pth``) are refused
  unless ``allow_pickle=True`` (then read with ``torch.load(weights_only=True)``).
* strict key check against the model built from the config: missing, unexpected and mis-shaped keys
  are all reported (by name) in one :class:`CheckpointError`, before any tensor data is read.
* low memory: the model is built on the ``meta`` device and the tensors are read one at a time
  straight from the file into their final buffers (no memory map, no second full copy), then
  attached with ``load_state_dict(..., assign=True)``; peak memory ≈ the model size plus one tensor.
* dtype policy of the reference (``reference-implementation.md`` §1.3): with a half ``torch_dtype``
  the backbone is half except diffusers' keep-in-fp32 modules (``time_embedder``,
  ``scale_shift_table``, ``norm1``, ``norm2``, ``norm3``), and the ControlNet, camera MLP and
  ``ref_index_embedding`` stay float32.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

from .config import WanBackboneConfig, WorldStereoConfig

__all__ = [
    "CheckpointError",
    "PICKLE_SUFFIXES",
    "KEEP_IN_FP32_MODULES",
    "EXTRA_FP32_PREFIXES",
    "parameter_dtype",
    "read_safetensors_header",
    "read_safetensors",
    "load_state_dict_file",
    "check_state_dict",
    "load_transformer",
    "save_transformer",
    "find_weights_file",
]

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".ckpt", ".pth")
#: diffusers ``WanTransformer3DModel._keep_in_fp32_modules`` minus ``rope`` (no parameters).
KEEP_IN_FP32_MODULES: tuple[str, ...] = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")
#: Modules the reference creates after loading the backbone, in the default dtype (float32).
EXTRA_FP32_PREFIXES: tuple[str, ...] = ("controlnet.", "camera_embedding.", "ref_index_embedding.")

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_HALF = (torch.float16, torch.bfloat16)


class CheckpointError(ValueError):
    """A checkpoint does not match the model (keys/shapes) or cannot be read."""


def parameter_dtype(key: str, torch_dtype: torch.dtype | None, keep_extras_fp32: bool = True) -> torch.dtype:
    """Load dtype of state-dict entry ``key`` under the reference policy.

    ``torch_dtype`` None or a non-half dtype: everything in that dtype (None = float32). Half dtypes:
    float32 for keys with a component in :data:`KEEP_IN_FP32_MODULES` (backbone) or, when
    ``keep_extras_fp32``, under :data:`EXTRA_FP32_PREFIXES`; ``torch_dtype`` otherwise.
    """
    if torch_dtype is None:
        return torch.float32
    if torch_dtype not in _HALF:
        return torch_dtype
    if key.startswith(EXTRA_FP32_PREFIXES):
        return torch.float32 if keep_extras_fp32 else torch_dtype
    if any(part in KEEP_IN_FP32_MODULES for part in key.split(".")):
        return torch.float32
    return torch_dtype


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], int]:
    """Parse the JSON header of a safetensors file.

    Returns:
        (``{key: {"dtype", "shape", "data_offsets"}}`` without ``__metadata__``, byte offset of the data).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"path: {str(path)!r} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        size = path.stat().st_size
        if n > min(size - 8, 100_000_000):
            raise CheckpointError(f"path: {str(path)!r} is not a safetensors file (bad header length {n})")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"path: {str(path)!r} has a corrupt safetensors header: {exc}") from exc
    header.pop("__metadata__", None)
    return header, 8 + n


def read_safetensors(path: str | os.PathLike, dtype_for_key: Callable[[str], torch.dtype | None] | None = None,
                     device: torch.device | str = "cpu", keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Read a safetensors file tensor by tensor with plain file reads (no memory map).

    Each tensor is read into a fresh buffer and, if ``dtype_for_key(key)`` differs from the stored
    dtype, converted (the raw buffer is released right after), so peak memory is the result plus one
    tensor. Only floating tensors are converted.
    """
    if sys.byteorder != "little":  # pragma: no cover - safetensors data is little-endian
        from safetensors.torch import load_file  # noqa: PLC0415

        sd = load_file(str(path), device="cpu")
        return {k: (v.to(dtype_for_key(k)) if dtype_for_key and v.is_floating_point() and dtype_for_key(k) else v)
                .to(device) for k, v in sd.items() if keys is None or k in set(keys)}
    header, base = read_safetensors_header(path)
    wanted = set(header) if keys is None else set(keys)
    entries = sorted(((k, v) for k, v in header.items() if k in wanted), key=lambda kv: kv[1]["data_offsets"][0])
    out: dict[str, Tensor] = {}
    with open(path, "rb", buffering=0) as fh:
        for key, info in entries:
            st_dtype = info["dtype"]
            if st_dtype not in _ST_DTYPES:
                raise CheckpointError(f"{key}: unsupported safetensors dtype {st_dtype!r} in {str(path)!r}")
            dtype = _ST_DTYPES[st_dtype]
            start, end = info["data_offsets"]
            shape = tuple(info["shape"])
            nbytes = end - start
            buf = torch.empty(nbytes, dtype=torch.uint8)
            fh.seek(base + start)
            view = memoryview(buf.numpy())
            got = 0
            while got < nbytes:
                r = fh.readinto(view[got:])
                if not r:
                    raise CheckpointError(f"{key}: file {str(path)!r} is truncated")
                got += r
            t = buf.view(dtype).reshape(shape) if nbytes else torch.empty(shape, dtype=dtype)
            target = dtype_for_key(key) if dtype_for_key is not None else None
            if target is not None and t.is_floating_point() and target != dtype:
                t = t.to(target)
                del buf
            out[key] = t.to(device) if torch.device(device).type != "cpu" else t
    return out


def find_weights_file(directory: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """``model.safetensors`` (or ``*.safetensors.index.json``) of ``directory``; pickle files only
    with ``allow_pickle``."""
    d = Path(directory)
    for name in ("model.safetensors", "model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
                 "diffusion_pytorch_model.safetensors.index.json"):
        if (d / name).is_file():
            return d / name
    pickles = sorted(p for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES) if d.is_dir() else []
    if pickles:
        if not allow_pickle:
            raise CheckpointError(f"directory: {str(d)!r} only has pickle weights {[p.name for p in pickles]}; "
                                  f"pickle files can run arbitrary code - convert them to safetensors or pass "
                                  f"allow_pickle=True if you trust them")
        return pickles[0]
    raise FileNotFoundError(f"directory: no model.safetensors in {str(d)!r}")


def load_state_dict_file(path: str | os.PathLike, allow_pickle: bool = False,
                         dtype_for_key: Callable[[str], torch.dtype | None] | None = None,
                         device: torch.device | str = "cpu", keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` (or a sharded ``.safetensors.index.json``); pickle
    formats only with ``allow_pickle=True``. ``keys``: read only these (safetensors only).

    Raises:
        CheckpointError: pickle file without opt-in, unknown format, corrupt file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: checkpoint {str(p)!r} does not exist")
    if p.name.endswith(".safetensors.index.json"):
        with open(p, encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map", {})
        wanted = None if keys is None else set(keys)
        out: dict[str, Tensor] = {}
        for shard in sorted({f for k, f in weight_map.items() if wanted is None or k in wanted}):
            out.update(read_safetensors(p.parent / shard, dtype_for_key, device, keys=wanted))
        return out
    if p.suffix == ".safetensors":
        return read_safetensors(p, dtype_for_key, device, keys=keys)
    if p.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(f"path: {str(p)!r} is a pickle-based checkpoint ({p.suffix}); loading it can run "
                                  f"arbitrary code - convert it to safetensors or pass allow_pickle=True if you trust it")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
            sd = sd["state_dict"]
        if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise CheckpointError(f"path: {str(p)!r} does not contain a flat state dict of tensors")
        out = {}
        for k, v in sd.items():
            t = dtype_for_key(k) if dtype_for_key is not None else None
            out[k] = (v.to(t) if t is not None and v.is_floating_point() else v).to(device)
        return out
    raise CheckpointError(f"path: unsupported checkpoint format {p.suffix!r} (expected .safetensors)")


def _shapes_of_file(path: Path) -> dict[str, tuple[int, ...]] | None:
    if path.suffix == ".safetensors":
        return {k: tuple(v["shape"]) for k, v in read_safetensors_header(path)[0].items()}
    if path.name.endswith(".safetensors.index.json"):
        with open(path, encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map", {})
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(weight_map.values())):
            shapes.update({k: tuple(v["shape"]) for k, v in read_safetensors_header(path.parent / shard)[0].items()})
        return shapes
    return None


def check_state_dict(expected: Mapping[str, tuple[int, ...] | Tensor], actual: Mapping[str, tuple[int, ...] | Tensor],
                     source: str = "checkpoint") -> None:
    """Strict comparison of key sets and shapes.

    Raises:
        CheckpointError: listing every missing key (with expected shape), every unexpected key and
            every key whose shape differs.
    """
    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if isinstance(v, Tensor) else tuple(v)

    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    mis = [(k, shape(expected[k]), shape(actual[k])) for k in expected if k in actual
           and shape(expected[k]) != shape(actual[k])]
    if not (missing or unexpected or mis):
        return
    lines = [f"{source} does not match the model:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + ", ".join(f"{k} {list(shape(expected[k]))}" for k in missing))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if mis:
        lines.append(f"  shape mismatches ({len(mis)}): " + ", ".join(
            f"{k} checkpoint {list(a)} vs model {list(e)}" for k, e, a in mis))
    raise CheckpointError("\n".join(lines))


def _resolve_backbone(config_dict: Mapping[str, Any], backbone_config: WanBackboneConfig | Mapping[str, Any] | None
                      ) -> WanBackboneConfig | Mapping[str, Any] | None:
    if backbone_config is not None or config_dict.get("transformer") is not None:
        return backbone_config
    base = config_dict.get("base_model")
    if isinstance(base, str) and base:
        cand = Path(base) / "transformer" / "config.json"
        if cand.is_file():
            with open(cand, encoding="utf-8") as fh:
                return WanBackboneConfig.from_dict(json.load(fh))
    raise ValueError("backbone_config: config.json has no 'transformer' object and base_model "
                     f"{base!r} is not a local diffusers directory; pass backbone_config= (the "
                     "transformer/config.json of the Wan base model)")


def load_transformer(directory: str | os.PathLike, torch_dtype: torch.dtype | None = torch.float32,
                     backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None,
                     device: torch.device | str = "cpu", allow_pickle: bool = False,
                     keep_extras_fp32: bool = True, base_transformer: str | os.PathLike | None = None) -> Any:
    """Build a :class:`WorldStereoTransformer` from ``directory`` (``config.json`` + ``model.safetensors``).

    Like the reference, weights that ``model.safetensors`` does not carry are taken from the base
    Wan transformer (``base_transformer``, default ``<base_model>/transformer`` when ``base_model``
    is a local folder with weights): the reference first loads the base transformer, then the
    checkpoint on top. The check stays strict over the union: every model key must come from one of
    the two files with the right shape, and no file may carry a key the model lacks.

    Args:
        directory: reference checkpoint sub-folder or conformance case directory.
        torch_dtype: load dtype (see :func:`parameter_dtype`); None = float32.
        backbone_config: backbone (diffusers Wan transformer) config when ``config.json`` has no
            ``transformer`` object; if omitted, ``base_model/transformer/config.json`` is read when
            ``base_model`` is a local directory.
        device: where the weights end up.
        allow_pickle: accept ``.bin/.pt/.ckpt/.pth`` weights.
        keep_extras_fp32: keep ControlNet / camera MLP / ref_index_embedding in float32 for half dtypes.
        base_transformer: folder of the base Wan transformer weights (diffusers layout) used for the
            keys the checkpoint lacks.
    Returns:
        the model in eval mode.
    Raises:
        FileNotFoundError, ValueError (config), CheckpointError (keys/shapes/format).
    """
    from .transformer import WorldStereoTransformer  # noqa: PLC0415  (import cycle)

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"directory: {str(d)!r} is not a directory")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"directory: no config.json in {str(d)!r}")
    with open(cfg_path, encoding="utf-8") as fh:
        raw = json.load(fh)
    config = WorldStereoConfig.from_dict(raw, backbone_config=_resolve_backbone(raw, backbone_config))
    weights = find_weights_file(d, allow_pickle=allow_pickle)

    with torch.device("meta"):
        model = WorldStereoTransformer(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dtype_for_key = lambda k: parameter_dtype(k, torch_dtype, keep_extras_fp32)  # noqa: E731
    file_shapes = _shapes_of_file(weights)
    source = f"checkpoint {str(weights)!r}"
    base_sd: dict[str, Tensor] = {}
    if file_shapes is not None:  # check before reading any tensor data
        lacking = [k for k in expected if k not in file_shapes]
        base_file = _base_weights_file(raw, base_transformer) if lacking else None
        if base_file is not None:
            base_shapes = _shapes_of_file(base_file) or {}
            fill = [k for k in lacking if k in base_shapes]
            extra_base = [k for k in base_shapes if k not in expected]
            if extra_base:
                check_state_dict(expected, {**base_shapes, **file_shapes},
                                 source=f"{source} + base transformer {str(base_file)!r}")
            combined = {**{k: base_shapes[k] for k in fill}, **file_shapes}
            check_state_dict(expected, combined, source=f"{source} + base transformer {str(base_file)!r}")
            logger.info("load_transformer: %d weights taken from the base transformer %s", len(fill), base_file)
            base_sd = load_state_dict_file(base_file, device=device, dtype_for_key=dtype_for_key, keys=fill)
        else:
            check_state_dict(expected, file_shapes, source=source)
    sd = load_state_dict_file(weights, allow_pickle=allow_pickle, device=device, dtype_for_key=dtype_for_key)
    sd = {**base_sd, **sd}
    del base_sd
    check_state_dict(expected, sd, source=source)
    model.load_state_dict(sd, strict=True, assign=True)
    del sd
    model._rebuild_rope(device)
    meta_left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta_left:  # pragma: no cover - guarded by the strict check
        raise CheckpointError(f"tensors not materialised after loading: {meta_left}")
    return model.eval()


def _base_weights_file(config_dict: Mapping[str, Any], base_transformer: str | os.PathLike | None) -> Path | None:
    """Weights file of the base Wan transformer: ``base_transformer`` or ``<base_model>/transformer``
    (a local folder); None when there is none."""
    if base_transformer is not None:
        folder = Path(base_transformer)
    else:
        base = config_dict.get("base_model")
        if not (isinstance(base, str) and base):
            return None
        folder = Path(base) / "transformer"
    if not folder.is_dir():
        if base_transformer is not None:
            raise FileNotFoundError(f"base_transformer: {str(folder)!r} is not a directory")
        return None
    try:
        return find_weights_file(folder)
    except FileNotFoundError:
        if base_transformer is not None:
            raise
        return None


def save_transformer(model: Any, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (reference layout, with the ``transformer`` object)
    atomically into ``directory``; returns the weights path."""
    from safetensors.torch import save_file  # noqa: PLC0415

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = d / f".model.safetensors.tmp{os.getpid()}"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, d / "model.safetensors")
    model.worldstereo_config.to_json_file(d / "config.json")
    return d / "model.safetensors"
