"""Checkpoint loading/saving for :class:`~worldstereo.models.transformer.WorldStereoTransformer`.

* safetensors only by default, read through the ``safetensors`` library (``safe_open``: its header
  validation refuses malformed headers, overlapping or out-of-file tensors and sizes that do not
  match the file); pickle formats (``.bin``, ``.pt``, ``.ckpt``, ``.pth``) are refused unless
  ``allow_pickle=True`` (then read with ``torch.load(weights_only=True)``). Every problem with a
  file is a :class:`CheckpointError` (a ``ValueError``) naming the file.
* the config is validated with bounds first (:mod:`worldstereo.models.config`), then the model is
  built on the ``meta`` device and its parameter count and every key/shape are compared with the
  weight files' headers (one :class:`CheckpointError` listing every difference) before any tensor
  data is read or any parameter is allocated.
* low memory: tensors are read one at a time into their final buffers (``pread`` backend where the
  installed safetensors has it; otherwise memory-mapped, re-opened every
  :data:`MMAP_REOPEN_BYTES` so that mapped pages do not pile up) and attached with
  ``load_state_dict(..., assign=True)``; peak memory ≈ the model size plus one tensor.
* non-finite weights (NaN, ±inf, or values that overflow the load dtype) are refused with the
  tensor's name (checked per tensor as it is read: one summing pass, no temporary copy).
* dtype policy of the reference (``reference-implementation.md`` §1.3): with a half ``torch_dtype``
  the backbone is half except diffusers' keep-in-fp32 modules (``time_embedder``,
  ``scale_shift_table``, ``norm1``, ``norm2``, ``norm3``), and the ControlNet, camera MLP and
  ``ref_index_embedding`` stay float32.
* saving (:func:`save_transformer`) is a crash-safe transaction
  (:mod:`worldstereo.models.checkpoint_folder`): the folder always holds the complete old or the
  complete new checkpoint, and files the save did not write are never deleted.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from worldstereo.config_checks import ConfigError, read_json_file
from worldstereo.finite import all_finite, count_nonfinite

from .checkpoint_folder import (
    CheckpointError,
    folder_state,
    owning_folder,
    readable_folder,
    verify_manifest,
    write_checkpoint_folder,
)
from .config import WanBackboneConfig, WorldStereoConfig, read_config_json
from worldstereo.errors import MissingPathError

__all__ = [
    "CheckpointError",
    "PICKLE_SUFFIXES",
    "KEEP_IN_FP32_MODULES",
    "EXTRA_FP32_PREFIXES",
    "TensorSpec",
    "parameter_dtype",
    "read_safetensors_specs",
    "read_safetensors",
    "weight_file_specs",
    "load_state_dict_file",
    "check_state_dict",
    "check_finite",
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
#: With the memory-map backend, the file is closed and re-opened after this many bytes were read,
#: which releases the mapped pages (they count in the resident set size).
MMAP_REOPEN_BYTES = 256 * 1024 * 1024

#: safetensors dtype names this library loads.
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_HALF = (torch.float16, torch.bfloat16)
_MAX_INDEX_BYTES = 64 * 1024 * 1024


class TensorSpec(NamedTuple):
    """dtype (safetensors name, e.g. ``"BF16"``) and shape of a stored tensor."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


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


_PREAD: bool | None = None  # whether the installed safetensors has the pread backend (found on first use)


def _safe_open(path: Path) -> Any:
    """``safe_open`` (validates the header) with errors as :class:`CheckpointError` naming ``path``."""
    global _PREAD
    try:
        if _PREAD is not False:
            try:
                handle = safe_open(str(path), framework="pt", device="cpu", backend="pread")
                _PREAD = True
                return handle
            except TypeError:  # safetensors without the ``backend`` keyword
                _PREAD = False
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, ValueError, TypeError, OverflowError, RuntimeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a valid safetensors file: {exc}") from exc


class _SafetensorsReader:
    """Reads tensors of one file one by one (see the module docstring for the memory behaviour)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._mapped = 0

    def __enter__(self) -> "_SafetensorsReader":
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    def _open(self) -> None:
        self._handle = _safe_open(self.path).__enter__()
        self._mapped = 0

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
            self._handle = None

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        h = self._handle
        return list(h.offset_keys() if hasattr(h, "offset_keys") else h.keys())

    def spec(self, key: str) -> TensorSpec:
        try:
            sl = self._handle.get_slice(key)
            return TensorSpec(str(sl.get_dtype()), tuple(int(n) for n in sl.get_shape()))
        except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{str(self.path)!r}: cannot read the header entry of {key!r}: {exc}") from exc

    def tensor(self, key: str, spec: TensorSpec) -> Tensor:
        if spec.dtype not in _ST_DTYPES:
            raise CheckpointError(f"{str(self.path)!r}: tensor {key!r} has dtype {spec.dtype}; supported: "
                                  f"{sorted(_ST_DTYPES)}")
        nbytes = spec.numel * _ST_DTYPES[spec.dtype].itemsize
        if _PREAD is False and self._mapped and self._mapped + nbytes > MMAP_REOPEN_BYTES:
            self._close()
            self._open()
        try:
            t = self._handle.get_tensor(key)
        except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
            raise CheckpointError(f"{str(self.path)!r}: cannot read tensor {key!r}: {exc}") from exc
        self._mapped += nbytes
        if t.dtype != _ST_DTYPES[spec.dtype] or tuple(t.shape) != spec.shape:  # pragma: no cover - library contract
            raise CheckpointError(f"{str(self.path)!r}: tensor {key!r} read as {t.dtype} {list(t.shape)}, header "
                                  f"says {spec.dtype} {list(spec.shape)}")
        return t


def read_safetensors_specs(path: str | os.PathLike) -> dict[str, TensorSpec]:
    """dtype and shape of every tensor of a safetensors file, from its header (validated by the
    ``safetensors`` library; no tensor data is read).

    Raises:
        CheckpointError: not a valid safetensors file (names the file); FileNotFoundError.
    """
    with _SafetensorsReader(Path(path)) as reader:
        return {k: reader.spec(k) for k in reader.keys()}


def check_finite(tensor: Tensor, name: str, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` if a floating tensor holds NaN or ±inf (one summing pass;
    see :mod:`worldstereo.finite`, whose exact check runs in chunks of bounded memory)."""
    if all_finite(tensor):
        return
    nan, inf = count_nonfinite(tensor)
    raise CheckpointError(f"{source}: tensor {name!r} contains non-finite values ({nan} NaN and {inf} infinite "
                          f"of {tensor.numel()}); refusing to load it")


def _finish_tensor(t: Tensor, key: str, target: torch.dtype | None, device: torch.device | str, source: str,
                   finite: bool) -> Tensor:
    """Check values (in the stored dtype), convert to ``target`` (floating tensors only; a
    conversion to a narrower range is checked for overflow), move to ``device``."""
    if finite:
        check_finite(t, key, source)
    if target is not None and t.is_floating_point() and target != t.dtype:
        narrower = target.is_floating_point and torch.finfo(target).max < torch.finfo(t.dtype).max
        t = t.to(target)
        if finite and narrower and not all_finite(t):
            raise CheckpointError(f"{source}: tensor {key!r} has values beyond the range of {target} (they become "
                                  f"infinite); load it in another torch_dtype")
    return t.to(device) if torch.device(device).type != "cpu" else t


def read_safetensors(path: str | os.PathLike, dtype_for_key: Callable[[str], torch.dtype | None] | None = None,
                     device: torch.device | str = "cpu", keys: Iterable[str] | None = None,
                     check_values: bool = True) -> dict[str, Tensor]:
    """Read a safetensors file tensor by tensor through the ``safetensors`` library.

    Each tensor is read into its own buffer and, if ``dtype_for_key(key)`` differs from the stored
    dtype, converted (the raw buffer is released right after), so peak memory is the result plus one
    tensor. Only floating tensors are converted. ``keys``: read only these.

    Raises:
        CheckpointError: invalid file (malformed header, overlapping or out-of-file tensors, sizes
            that do not match the file, unsupported dtype) or, with ``check_values``, a tensor with
            NaN/inf values — always naming the file (and the tensor).
    """
    path = Path(path)
    source = f"checkpoint {str(path)!r}"
    wanted = None if keys is None else set(keys)
    out: dict[str, Tensor] = {}
    with _SafetensorsReader(path) as reader:
        for key in reader.keys():
            if wanted is not None and key not in wanted:
                continue
            t = reader.tensor(key, reader.spec(key))
            target = dtype_for_key(key) if dtype_for_key is not None else None
            out[key] = _finish_tensor(t, key, target, device, source, check_values)
            del t
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
    raise MissingPathError(f"directory: no model.safetensors in {str(d)!r}")


def _read_index(path: Path) -> dict[str, str]:
    """``weight_map`` of a ``*.safetensors.index.json``: tensor name -> shard file name (a plain
    ``.safetensors`` name in the same folder)."""
    data = read_json_file(path, error=CheckpointError, what="index file", max_bytes=_MAX_INDEX_BYTES)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{str(path)!r}: expected an object with a non-empty 'weight_map' "
                              f"(tensor name -> shard file)")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.endswith(".safetensors") or Path(shard).name != shard \
                or shard in (".", "..") or "\\" in shard:
            raise CheckpointError(f"{str(path)!r}: weight_map[{key!r}] must be a .safetensors file name in the "
                                  f"same folder, got {shard!r}"[:300])
    return weight_map


def _shard_specs(index: Path) -> dict[Path, dict[str, TensorSpec]]:
    """Header of every shard of an index, checked against the index (each tensor in exactly the
    shard the index names)."""
    weight_map = _read_index(index)
    shards = {index.parent / name: read_safetensors_specs(index.parent / name)
              for name in sorted(set(weight_map.values()))}
    seen: dict[str, Path] = {}
    for shard, specs in shards.items():
        for key in specs:
            if key in seen:
                raise CheckpointError(f"{str(index)!r}: tensor {key!r} is stored in both {seen[key].name} and "
                                      f"{shard.name}")
            seen[key] = shard
            if weight_map.get(key) != shard.name:
                raise CheckpointError(f"{str(index)!r}: tensor {key!r} is in {shard.name} but the index says "
                                      f"{weight_map.get(key)!r}")
    missing = sorted(k for k in weight_map if k not in seen)
    if missing:
        raise CheckpointError(f"{str(index)!r}: tensors listed but absent from their shard: {_listing(missing)}")
    return shards


def load_state_dict_file(path: str | os.PathLike, allow_pickle: bool = False,
                         dtype_for_key: Callable[[str], torch.dtype | None] | None = None,
                         device: torch.device | str = "cpu", keys: Iterable[str] | None = None,
                         check_values: bool = True) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` (or a sharded ``.safetensors.index.json``); pickle
    formats only with ``allow_pickle=True``. ``keys``: read only these.

    Raises:
        CheckpointError: pickle file without opt-in, unknown format, invalid or corrupt file, or
            (with ``check_values``) a tensor holding NaN/inf — naming the file and the tensor.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(f"path: checkpoint {str(p)!r} does not exist")
    wanted = None if keys is None else set(keys)
    if p.name.endswith(".safetensors.index.json"):
        out: dict[str, Tensor] = {}
        for shard, specs in _shard_specs(p).items():
            if wanted is None or any(k in wanted for k in specs):
                out.update(read_safetensors(shard, dtype_for_key, device, keys=wanted, check_values=check_values))
        return out
    if p.suffix == ".safetensors":
        return read_safetensors(p, dtype_for_key, device, keys=wanted, check_values=check_values)
    if p.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(f"path: {str(p)!r} is a pickle-based checkpoint ({p.suffix}); loading it can run "
                                  f"arbitrary code - convert it to safetensors or pass allow_pickle=True if you trust it")
        try:
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file; re-raised naming it
            raise CheckpointError(f"{str(p)!r} cannot be read as a weights-only torch checkpoint: "
                                  f"{type(exc).__name__}: {exc}"[:1000]) from exc
        if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
            sd = sd["state_dict"]
        if not isinstance(sd, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
            raise CheckpointError(f"path: {str(p)!r} does not contain a flat state dict of tensors")
        source = f"checkpoint {str(p)!r}"
        return {k: _finish_tensor(v, k, dtype_for_key(k) if dtype_for_key is not None else None, device, source,
                                  check_values)
                for k, v in sd.items() if wanted is None or k in wanted}
    raise CheckpointError(f"path: unsupported checkpoint format {p.suffix!r} (expected .safetensors)")


def weight_file_specs(path: str | os.PathLike) -> dict[str, TensorSpec] | None:
    """dtype and shape of every tensor of a ``.safetensors`` file or of all shards of an
    ``.safetensors.index.json`` (headers only); None for pickle formats (no header)."""
    path = Path(path)
    if path.name.endswith(".safetensors.index.json"):
        out: dict[str, TensorSpec] = {}
        for specs in _shard_specs(path).values():
            out.update(specs)
        return out
    if path.suffix == ".safetensors":
        return read_safetensors_specs(path)
    return None


_LIST_LIMIT = 50


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def _shape(v: Any) -> tuple[int, ...]:
    if isinstance(v, Tensor):
        return tuple(v.shape)
    if isinstance(v, TensorSpec):
        return v.shape
    return tuple(v)


def check_state_dict(expected: Mapping[str, tuple[int, ...] | Tensor | TensorSpec],
                     actual: Mapping[str, tuple[int, ...] | Tensor | TensorSpec], source: str = "checkpoint") -> None:
    """Strict comparison of key sets and shapes.

    Raises:
        CheckpointError: starting with the parameter counts of the model and of the checkpoint when
            they differ, then listing every missing key (with expected shape), every unexpected key
            and every key whose shape differs (at most 50 of each, with the total).
    """
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    mis = [(k, _shape(expected[k]), _shape(actual[k])) for k in expected if k in actual
           and _shape(expected[k]) != _shape(actual[k])]
    if not (missing or unexpected or mis):
        return
    lines = [f"{source} does not match the model:"]
    n_model = sum(math.prod(_shape(v)) for v in expected.values())
    n_file = sum(math.prod(_shape(v)) for v in actual.values())
    if n_model != n_file:
        lines.append(f"  the config describes {n_model:,} parameters in {len(expected)} tensors, the weight "
                     f"file(s) hold {n_file:,} in {len(actual)} tensors")
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + _listing([f"{k} {list(_shape(expected[k]))}"
                                                                      for k in missing]))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + _listing(unexpected))
    if mis:
        lines.append(f"  shape mismatches ({len(mis)}): " + _listing(
            [f"{k} checkpoint {list(a)} vs model {list(e)}" for k, e, a in mis]))
    raise CheckpointError("\n".join(lines))


def _resolve_backbone(config_dict: Mapping[str, Any], backbone_config: WanBackboneConfig | Mapping[str, Any] | None
                      ) -> WanBackboneConfig | Mapping[str, Any] | None:
    if backbone_config is not None or config_dict.get("transformer") is not None:
        return backbone_config
    base = config_dict.get("base_model")
    if isinstance(base, str) and base:
        cand = Path(base) / "transformer" / "config.json"
        if cand.is_file():
            try:
                return WanBackboneConfig.from_dict(read_config_json(cand))
            except ConfigError as exc:
                raise type(exc)(f"{str(cand)!r}: {exc}") from exc
    raise ConfigError("backbone_config: config.json has no 'transformer' object and base_model "
                      f"{base!r} is not a local diffusers directory; pass backbone_config= (the "
                      "transformer/config.json of the Wan base model)"[:500])


def read_checkpoint_config(directory: str | os.PathLike,
                           backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None
                           ) -> tuple[dict[str, Any], WorldStereoConfig]:
    """Parse and validate ``directory/config.json`` (types and bounds of every field, before anything
    is built). Returns the raw JSON object and the config.

    Raises:
        FileNotFoundError: no config.json; ConfigError / ConfigTypeError (ValueError): invalid
            content, the message starting with the file name.
    """
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        raise MissingPathError(f"directory: no config.json in {str(Path(directory))!r}")
    raw = read_config_json(cfg_path)
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a JSON object, got {type(raw).__name__}")
        config = WorldStereoConfig.from_dict(raw, backbone_config=_resolve_backbone(raw, backbone_config))
    except ConfigError as exc:
        raise type(exc)(f"{str(cfg_path)!r}: {exc}") from exc
    return raw, config


def meta_transformer(config: WorldStereoConfig) -> Any:
    """The transformer of ``config`` built on the ``meta`` device (no memory for parameters)."""
    from .transformer import WorldStereoTransformer  # noqa: PLC0415  (import cycle)

    with torch.device("meta"):
        return WorldStereoTransformer(config)


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

    Order of the checks (nothing is allocated before the last one): ``config.json`` types and
    bounds; the model built on the ``meta`` device compared with the weight files' headers
    (parameter count, keys, shapes); then the tensors, each checked for NaN/inf as it is read. A
    folder written by :func:`save_transformer` is read consistently even while or after a save was
    interrupted (:mod:`~worldstereo.models.checkpoint_folder`).

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
        FileNotFoundError; ConfigError (ValueError, config); CheckpointError (ValueError: format,
        keys, shapes, non-finite values, incomplete folder).
    """
    given = Path(directory)
    if not given.is_dir():
        raise MissingPathError(f"directory: {str(given)!r} is not a directory")
    given = owning_folder(given)
    state = folder_state(given)
    d = readable_folder(given)
    verify_manifest(d)
    raw, config = read_checkpoint_config(d, backbone_config)
    weights = find_weights_file(d, allow_pickle=allow_pickle)

    model = meta_transformer(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dtype_for_key = lambda k: parameter_dtype(k, torch_dtype, keep_extras_fp32)  # noqa: E731
    file_shapes = weight_file_specs(weights)
    source = f"checkpoint {str(weights)!r}"
    base_sd: dict[str, Tensor] = {}
    if file_shapes is not None:  # check before reading any tensor data
        lacking = [k for k in expected if k not in file_shapes]
        base_file = _base_weights_file(raw, base_transformer) if lacking else None
        if base_file is not None:
            base_shapes = weight_file_specs(base_file) or {}
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
    if folder_state(given) != state:
        raise CheckpointError(f"{str(given)!r} was changed by a save while it was being loaded; load it again")
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
            raise MissingPathError(f"base_transformer: {str(folder)!r} is not a directory")
        return None
    try:
        return find_weights_file(folder)
    except FileNotFoundError:
        if base_transformer is not None:
            raise
        return None


def save_file_of_transformer(model: Any, directory: Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` of ``model`` into the existing folder
    ``directory`` (no transaction: the caller writes into a staging folder; a write failure of
    safetensors becomes an ``OSError`` in :func:`~worldstereo.models.checkpoint_folder.write_checkpoint_folder`)."""
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
    del sd
    model.worldstereo_config.to_json_file(directory / "config.json")  # the reference schema


def save_transformer(model: Any, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (reference layout, with the ``transformer``
    object) into ``directory`` as a crash-safe transaction
    (:func:`~worldstereo.models.checkpoint_folder.write_checkpoint_folder`): at every instant the
    folder holds the complete old or the complete new checkpoint, and files the save did not write
    are kept. Returns the weights path."""
    d = write_checkpoint_folder(directory, lambda staging: save_file_of_transformer(model, staging))
    return d / "model.safetensors"
