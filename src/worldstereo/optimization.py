"""Memory/speed optimisations: attention backends, model CPU offload and memory tiers.

* :func:`enable_xformers_memory_efficient_attention` switches every attention layer of a WorldStereo
  model (or a bare transformer) to xFormers when it is importable, else to PyTorch
  ``scaled_dot_product_attention`` with one warning (diffusers' ``set_attention_backend``).
* :func:`enable_model_cpu_offload` keeps each big component on the CPU and moves it to the
  accelerator only around its own forward (like diffusers' ``enable_model_cpu_offload``), with the
  ControlNet branch of the transformer treated as a component of its own: while the ControlNet runs,
  the backbone waits on the CPU, so at most one big component occupies the accelerator. The hooks are
  diffusers hooks (``diffusers.hooks.HookRegistry``); inputs move with accelerate's ``send_to_device``.
* :func:`enable_memory_tier` places a whole model by tier name (:data:`MEMORY_TIERS`): everything
  resident, model CPU offload, diffusers group offloading (block or leaf level, CUDA streams with
  prefetching, optional disk storage), fp8 weight storage with bf16 compute (diffusers layerwise
  casting), torchao weight-only int8 / float8 quantization, and combinations.
  :func:`suggest_memory_tier` picks one for a VRAM budget from the estimates of :mod:`worldstereo.vram`
  (table in ``docs/performance.md``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import re
import tempfile
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import send_to_device
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from worldstereo.devices import check_device
from worldstereo.errors import UnavailableError
from worldstereo.models.checkpoint import parameter_dtype
from worldstereo.vram import PRECISION_CRITICAL_PATTERNS, MEMORY_TIERS, MemoryTier, get_memory_tier, suggest_memory_tier

__all__ = [
    "MEMORY_TIERS",
    "MemoryTier",
    "MemoryTierHandle",
    "ModelOffloadHandle",
    "enable_memory_tier",
    "enable_model_cpu_offload",
    "enable_xformers_memory_efficient_attention",
    "execution_device",
    "get_memory_tier",
    "suggest_memory_tier",
]

logger = logging.getLogger(__name__)

#: Components looked up on a WorldStereo model, in offload order (attribute names).
_ENCODER_ATTRS = ("text_encoder", "image_encoder", "vae")
#: Methods (besides ``forward``) through which a component is used (VAE encode/decode, ControlNet embed).
_ENTRY_METHODS = ("encode", "decode", "embed")
_HANDLE_ATTR = "_worldstereo_offload_handle"
_TIER_ATTR = "_worldstereo_memory_tier"
_HOOK_NAME = "worldstereo_model_offload"


# ------------------------------------------------------------------------------------------ attention
def _xformers_usable() -> bool:
    """Whether ``xformers.ops`` imports (a broken installation counts as absent)."""
    try:
        importlib.import_module("xformers.ops")
    except Exception:  # noqa: BLE001  (ImportError, or a broken binary raising anything)
        return False
    return True


def _transformer_of(model: nn.Module) -> nn.Module:
    """The ``transformer`` sub-module of a WorldStereo model, else ``model`` itself (a sub-module
    lookup: a diffusers model's config keys are not attributes we want here)."""
    inner = model._modules.get("transformer")
    return inner if isinstance(inner, nn.Module) else model


def _set_backend_on(module: nn.Module, backend: str) -> bool:
    """Set the attention backend (``"sdpa"`` | ``"xformers"``) of ``module`` if it offers a way;
    returns whether it did. diffusers models go through ``set_attention_backend`` (which reaches every
    attention, our ControlNet's included); ``"sdpa"`` is diffusers' ``"native"``."""
    from diffusers import ModelMixin  # noqa: PLC0415  (import cost only when used)

    setter = getattr(module, "set_attention_backend", None)
    if callable(setter):
        plain_diffusers = isinstance(module, ModelMixin) and \
            type(module).set_attention_backend is ModelMixin.set_attention_backend
        setter("native" if (plain_diffusers and backend == "sdpa") else backend)
        return True
    done = False
    for sub in module.modules():  # attention processors exposing set_backend(...)
        proc = getattr(sub, "processor", None)
        if proc is not None and callable(getattr(proc, "set_backend", None)):
            proc.set_backend(backend)
            done = True
    if not done and backend == "xformers":
        for sub in module.modules():  # classic diffusers attention layers
            fn = getattr(sub, "set_use_memory_efficient_attention_xformers", None)
            if callable(fn):
                fn(True)
                done = True
    return done


def enable_xformers_memory_efficient_attention(model: nn.Module) -> str:
    """Use xFormers memory-efficient attention in the transformer and its ControlNet branch.

    Works on a WorldStereo model (its ``transformer`` attribute is used) or a bare transformer. A
    module's own ``set_attention_backend(name)`` is preferred (our transformer, a diffusers model:
    every attention including the ControlNet's; ``"sdpa"`` is diffusers' ``"native"``); otherwise
    attention processors with ``set_backend`` or diffusers' ``set_use_memory_efficient_attention_xformers``
    are switched.

    When xFormers is not importable, PyTorch ``scaled_dot_product_attention`` is selected and one
    ``UserWarning`` is emitted. The numerical result is unaffected either way (up to float noise).

    Args:
        model: a WorldStereo model or a transformer (``torch.nn.Module``).

    Returns:
        The backend now in use: ``"xformers"`` or ``"sdpa"``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (WorldStereo model or transformer), "
                        f"got {type(model).__name__}")
    backend = "xformers" if _xformers_usable() else "sdpa"
    if backend == "sdpa":
        warnings.warn("xformers is not installed (or fails to import): using PyTorch scaled_dot_product_attention "
                      "instead (pip install xformers to use it)", UserWarning, stacklevel=2)
    transformer = _transformer_of(model)
    if not _set_backend_on(transformer, backend):
        logger.info("no configurable attention layers found in %s; left unchanged", type(transformer).__name__)
    else:
        logger.info("attention backend set to %s", backend)
    return backend


# ------------------------------------------------------------------------------------------ offload
def _accelerator_available() -> bool:
    """Whether a CUDA, XPU or MPS accelerator is usable on this machine."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and callable(getattr(xpu, "is_available", None)) and xpu.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _default_accelerator() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and callable(getattr(xpu, "is_available", None)) and xpu.is_available():
        return torch.device("xpu")
    return torch.device("mps")


def _move_module(module: nn.Module, device: torch.device, exclude: tuple[nn.Module, ...] = ()) -> None:
    """Move parameters and buffers of ``module`` to ``device`` in place, skipping ``exclude`` sub-trees.

    Parameters keep their identity where the device types allow it (``p.data`` is replaced, as
    ``nn.Module.to`` does), so references held elsewhere stay valid.
    """
    skip = {id(m) for m in exclude}
    stack = [module]
    while stack:
        m = stack.pop()
        if id(m) in skip:
            continue
        for name, p in m._parameters.items():
            if p is not None and p.device != device:
                moved = p.data.to(device)
                try:
                    p.data = moved
                except RuntimeError:  # incompatible tensor types (e.g. meta): replace the Parameter
                    m._parameters[name] = nn.Parameter(moved, requires_grad=p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None and b.device != device:
                m._buffers[name] = b.to(device)
        stack.extend(c for c in m._modules.values() if c is not None)


@dataclass
class _Component:
    name: str
    module: nn.Module
    exclude: tuple[nn.Module, ...] = ()
    depth: int = 0


@dataclass
class ModelOffloadHandle:
    """State of an installed model offload (returned by :func:`enable_model_cpu_offload`).

    Attributes:
        execution_device: the accelerator components run on.
        offload_device: where idle components wait (CPU).
        components: component name -> module (``"transformer"`` = backbone without its ControlNet).
        on_device: names of the components currently on ``execution_device``.
        keep_outer_resident: when True, a component whose forward calls a nested component (the
            transformer calling its ControlNet) stays on the accelerator meanwhile.
        history: the last 512 transfers, ``("load" | "offload", name)``, oldest first (diagnostics).
    """

    execution_device: torch.device
    offload_device: torch.device
    keep_outer_resident: bool = False
    _components: dict[str, _Component] = field(default_factory=dict)
    _active: list[str] = field(default_factory=list)
    on_device: set[str] = field(default_factory=set)
    history: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=512))
    _removers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def components(self) -> dict[str, nn.Module]:
        return {n: c.module for n, c in self._components.items()}

    def _load(self, name: str) -> None:
        c = self._components[name]
        _move_module(c.module, self.execution_device, c.exclude)
        self.on_device.add(name)
        self.history.append(("load", name))
        logger.debug("offload: %s -> %s", name, self.execution_device)

    def _offload(self, name: str) -> None:
        c = self._components[name]
        _move_module(c.module, self.offload_device, c.exclude)
        self.on_device.discard(name)
        self.history.append(("offload", name))
        logger.debug("offload: %s -> %s", name, self.offload_device)

    def _enter(self, name: str) -> None:
        c = self._components[name]
        c.depth += 1
        if c.depth > 1:  # re-entrant call (e.g. decode -> forward): already resident
            return
        for other in list(self.on_device):
            if other != name and not (self.keep_outer_resident and other in self._active):
                self._offload(other)
        if name not in self.on_device:
            self._load(name)
        self._active.append(name)

    def _exit(self, name: str) -> None:
        c = self._components[name]
        c.depth -= 1
        if c.depth > 0:
            return
        if self._active and self._active[-1] == name:
            self._active.pop()
        else:  # defensive: out-of-order exit
            self._active = [a for a in self._active if a != name]
        if self._active:  # nested call finished: give the device back to the caller
            outer = self._active[-1]
            self._offload(name)
            if outer not in self.on_device:
                self._load(outer)

    def _call(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``fn`` (a component's forward or entry method) with the component on the device."""
        self._enter(name)
        try:
            device = self.execution_device
            return fn(*send_to_device(args, device), **send_to_device(kwargs, device))
        finally:
            self._exit(name)

    def offload_all(self) -> None:
        """Move every component to the offload device (e.g. after a generation)."""
        for name in list(self.on_device):
            self._offload(name)

    def remove(self) -> None:
        """Uninstall the hooks; components are left on the offload device."""
        for undo in self._removers:
            undo()
        self._removers.clear()
        self.offload_all()


class _ComponentOffloadHook(ModelHook):
    """diffusers hook of one offloaded component: moves it (and the call's tensors) to the execution
    device before its forward and hands the device back afterwards, also when the forward raises."""

    def __init__(self, handle: ModelOffloadHandle, name: str) -> None:
        super().__init__()
        self.handle = handle
        self.name = name

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.handle._call(self.name, self.fn_ref.original_forward, args, kwargs)


def _install(handle: ModelOffloadHandle, comp: _Component) -> None:
    handle._components[comp.name] = comp
    name, module = comp.name, comp.module
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(_ComponentOffloadHook(handle, name), _HOOK_NAME)
    handle._removers.append(functools.partial(registry.remove_hook, _HOOK_NAME, recurse=False))

    for meth in _ENTRY_METHODS:  # entry points other than forward (VAE encode/decode, ControlNet embed)
        original = getattr(module, meth, None)
        if not callable(original) or meth in module.__dict__:
            continue

        def make_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return handle._call(name, fn, args, kwargs)
            return wrapper

        object.__setattr__(module, meth, make_wrapper(original))
        handle._removers.append(functools.partial(module.__dict__.pop, meth, None))


def enable_model_cpu_offload(model: nn.Module, device: str | torch.device | None = None, *,
                             offload_device: str | torch.device = "cpu",
                             keep_outer_resident: bool = False) -> ModelOffloadHandle:
    """Keep each big component on the CPU and move it to the accelerator only while it runs.

    Components (those present): ``text_encoder``, ``image_encoder``, ``vae`` and the transformer
    backbone of a WorldStereo model — or the model itself when it is a bare transformer — plus the
    transformer's ``controlnet`` sub-module as a separate component. A component is moved to
    ``device`` by a hook on its ``forward`` (and ``encode`` / ``decode`` for the VAE), together with
    the tensor arguments of the call; the component previously on the device goes back to the CPU.
    When the transformer calls its ControlNet, the backbone is offloaded for the duration of the
    ControlNet forward and reloaded afterwards (``keep_outer_resident=True`` keeps it resident
    instead: faster, more memory). Outputs stay on ``device``. Other sub-modules of ``model`` are not
    touched. Calling this again replaces the previous installation.

    Args:
        model: WorldStereo model or transformer.
        device: accelerator to compute on; default: the current CUDA device (else XPU, else MPS).
        offload_device: where idle components are kept.
        keep_outer_resident: see above.

    Returns:
        A :class:`ModelOffloadHandle` (``remove()`` uninstalls the hooks).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UnavailableError (a ``RuntimeError`` and a ``ValueError``): no accelerator (CUDA, XPU or MPS)
            is available on this machine; ValueError: a bad ``device``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (WorldStereo model or transformer), "
                        f"got {type(model).__name__}")
    if device is not None:
        device = check_device(device, "device")
    if not _accelerator_available():
        raise UnavailableError("enable_model_cpu_offload: expected a CUDA, XPU or MPS accelerator, but none is "
                               "available on this machine; CPU offload only helps when the model runs on an "
                               "accelerator - run on the CPU without it (device='cpu')")
    exec_device = device if device is not None else _default_accelerator()
    previous = getattr(model, _HANDLE_ATTR, None)
    if isinstance(previous, ModelOffloadHandle):
        previous.remove()

    handle = ModelOffloadHandle(execution_device=exec_device, offload_device=torch.device(offload_device),
                                keep_outer_resident=keep_outer_resident)
    comps: list[_Component] = []
    for attr in _ENCODER_ATTRS:
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module):
            comps.append(_Component(attr, sub))
    transformer = _transformer_of(model)
    controlnet = getattr(transformer, "controlnet", None)
    if isinstance(controlnet, nn.Module):
        comps.append(_Component("transformer", transformer, exclude=(controlnet,)))
        comps.append(_Component("controlnet", controlnet))
    else:
        comps.append(_Component("transformer", transformer))
    for comp in comps:
        _install(handle, comp)
        _move_module(comp.module, handle.offload_device, comp.exclude)
    object.__setattr__(model, _HANDLE_ATTR, handle)
    logger.info("model CPU offload enabled on %s for: %s", exec_device, ", ".join(c.name for c in comps))
    return handle


def execution_device(model: nn.Module) -> torch.device:
    """Device the model computes on: the accelerator of :func:`enable_model_cpu_offload` or of a
    memory tier (:func:`enable_memory_tier`) when one is enabled (weights may then rest on the CPU),
    else the device of its parameters."""
    handle = getattr(model, _HANDLE_ATTR, None)
    if isinstance(handle, ModelOffloadHandle):
        return handle.execution_device
    tier = getattr(model, _TIER_ATTR, None)
    if isinstance(tier, MemoryTierHandle):
        return tier.execution_device
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


# ------------------------------------------------------------------------------------------ memory tiers

@dataclass
class MemoryTierHandle:
    """What :func:`enable_memory_tier` did (also stored on the model; :func:`execution_device` reads it).

    Attributes:
        tier: the applied :class:`MemoryTier`.
        execution_device: where the model computes.
        placements: component name -> how it was placed (for logs and tests).
        offload: the :class:`ModelOffloadHandle` of the model-offload tiers, else None.
        offload_dir: the disk folder of ``group_offload_disk``, else None.
    """

    tier: MemoryTier
    execution_device: torch.device
    placements: dict[str, str] = field(default_factory=dict)
    offload: ModelOffloadHandle | None = None
    offload_dir: Path | None = None


def _components_of(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Module]]:
    """(transformer, {encoder name: module}) of a WorldStereo model or a bare transformer."""
    transformer = _transformer_of(model)
    if not isinstance(getattr(transformer, "controlnet", None), nn.Module) or \
            not callable(getattr(transformer, "enable_group_offload", None)):
        raise TypeError(f"model: expected a WorldStereo model or a WorldStereoTransformer, got {type(model).__name__}")
    encoders = {name: model._modules[name] for name in _ENCODER_ATTRS
                if transformer is not model and isinstance(model._modules.get(name), nn.Module)}
    return transformer, encoders


def _require_torchao() -> Any:
    if importlib.util.find_spec("torchao") is None:
        raise ImportError("this memory tier quantizes with torchao, which is not installed: "
                          "pip install 'worldstereo[quantization]' (or pip install torchao)")
    return importlib.import_module("torchao.quantization")


def _cast_like_reference(transformer: nn.Module, dtype: torch.dtype) -> None:
    """Cast the transformer to ``dtype`` keeping the backbone's keep-fp32 modules (the reference
    policy); the ControlNet, camera MLP and ``ref_index_embedding`` follow ``dtype`` too."""
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            target = parameter_dtype(name, dtype, keep_extras_fp32=False)
            if p.is_floating_point() and p.dtype != target:
                p.data = p.data.to(target)


def _quantizable(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and not any(re.search(p, fqn) for p in PRECISION_CRITICAL_PATTERNS)


def _convert_weights(tier: MemoryTier, transformer: nn.Module, encoders: dict[str, nn.Module],
                     compute_dtype: torch.dtype) -> dict[str, str]:
    """Apply the tier's weight format on the CPU (before placement). Returns component -> description."""
    done: dict[str, str] = {}
    if tier.weights == "as_loaded":
        return done
    _cast_like_reference(transformer, compute_dtype)
    text = encoders.get("text_encoder")
    if text is not None:
        text.to(compute_dtype)
    if tier.weights == "fp8_layerwise":
        # the backbone's own pattern list skips the ControlNet (kept-fp32 module): cast it on its own
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
        transformer.controlnet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                        compute_dtype=compute_dtype)
        done["transformer"] = f"float8_e4m3fn storage, {compute_dtype} compute (layerwise casting)"
        if text is not None:
            done["text_encoder"] = f"{compute_dtype}"
        return done
    tq = _require_torchao()
    config = tq.Int8WeightOnlyConfig() if tier.weights == "int8_weight_only" else tq.Float8WeightOnlyConfig()
    tq.quantize_(transformer, config, filter_fn=_quantizable)
    done["transformer"] = f"torchao {type(config).__name__}, {compute_dtype} compute"
    if text is not None:
        tq.quantize_(text, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        done["text_encoder"] = f"torchao {type(config).__name__}, {compute_dtype} compute"
    return done


def _place(tier: MemoryTier, model: nn.Module, transformer: nn.Module, encoders: dict[str, nn.Module],
           device: torch.device, use_stream: bool, offload_dir: Path | None) -> tuple[dict[str, str], Any]:
    """Place the components on ``device`` as the tier says. Returns (placements, model-offload handle)."""
    placements: dict[str, str] = {}
    if tier.placement == "resident":
        model.to(device)
        placements.update({name: f"resident on {device}" for name in ("transformer", *encoders)})
        return placements, None
    if tier.placement == "model_offload":
        handle = enable_model_cpu_offload(model, device=device, keep_outer_resident=True)
        placements.update({name: f"model offload to {device}" for name in handle.components})
        return placements, handle
    from diffusers.hooks import apply_group_offloading  # noqa: PLC0415

    leaf = tier.placement == "group_leaf"
    common: dict[str, Any] = dict(onload_device=device, offload_device=torch.device("cpu"), use_stream=use_stream,
                                  non_blocking=use_stream, record_stream=use_stream,
                                  offload_to_disk_path=str(offload_dir) if offload_dir is not None else None)
    kind = "leaf_level" if leaf else "block_level"
    transformer.enable_group_offload(offload_type=kind, num_blocks_per_group=None if leaf else 1, **common)
    placements["transformer"] = f"group offload ({kind}{', streams' if use_stream else ''}) to {device}"
    text = encoders.get("text_encoder")
    if text is not None:
        if leaf:
            apply_group_offloading(text, offload_type="leaf_level", **common)
        else:  # UMT5 keeps its block list under ``encoder``: group per T5 block
            inner = ["encoder"] if isinstance(getattr(getattr(text, "encoder", None), "block", None),
                                              nn.ModuleList) else None
            apply_group_offloading(text, offload_type="block_level", num_blocks_per_group=1, block_modules=inner,
                                   **common)
        placements["text_encoder"] = f"group offload ({kind}) to {device}"
    image = encoders.get("image_encoder")
    if image is not None:  # block level on CLIP = the whole tower on the device while it runs
        apply_group_offloading(image, offload_type=kind, num_blocks_per_group=None if leaf else 1, **common)
        placements["image_encoder"] = f"group offload ({kind}) to {device}"
    vae = encoders.get("vae")
    if vae is not None:  # small; its encode/decode do not go through forward, keep it resident
        vae.to(device)
        placements["vae"] = f"resident on {device}"
    return placements, None


def enable_memory_tier(model: nn.Module, tier: str | MemoryTier, device: str | torch.device | None = None, *,
                       offload_dir: str | Path | None = None,
                       compute_dtype: torch.dtype = torch.bfloat16) -> MemoryTierHandle:
    """Place a WorldStereo model (or a bare transformer) on one accelerator by memory tier.

    Tiers (:data:`MEMORY_TIERS`; expected peak VRAM in ``docs/performance.md`` and from
    :func:`worldstereo.vram.estimate_peak_vram_gb`): ``resident``, ``model_offload``,
    ``group_offload`` (block level, CUDA streams + prefetch), ``group_offload_leaf``,
    ``group_offload_disk`` (weights on disk, ``offload_dir``), ``fp8`` (fp8 storage, bf16 compute),
    ``int8`` / ``float8`` (torchao weight-only), ``fp8_model_offload``, ``int8_model_offload``,
    ``fp8_group_offload``, ``fp8_group_offload_leaf``. See :class:`MemoryTier` for what each does.
    Lossy tiers convert the weights in place (irreversibly: reload the model to undo); a model takes
    one tier.

    Args:
        model: WorldStereo model or WorldStereoTransformer (on the CPU, as loaded).
        tier: tier name or :class:`MemoryTier`.
        device: accelerator to compute on (default: the current CUDA device, else XPU, else MPS);
            tiers that keep everything resident (``resident``, ``fp8``, ``int8``, ``float8``) also
            run on ``"cpu"`` (and default to it without an accelerator).
        offload_dir: folder for ``group_offload_disk`` (default: a new temporary folder).
        compute_dtype: compute dtype of the lossy tiers (bfloat16).

    Returns:
        A :class:`MemoryTierHandle` (also stored on the model for :func:`execution_device`).

    Raises:
        ValueError: unknown tier; TypeError: not a WorldStereo model / transformer;
        UnavailableError (a ``RuntimeError`` and a ``ValueError``): the tier needs an accelerator (none
            available, or ``device`` is the CPU), a ``device`` this machine does not have, or the model
            already has a tier; ImportError: a torchao tier without torchao installed.
    """
    tier = get_memory_tier(tier)
    if device is not None:
        device = check_device(device, "device")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (WorldStereo model or transformer), "
                        f"got {type(model).__name__}")
    transformer, encoders = _components_of(model)
    if isinstance(getattr(model, _TIER_ATTR, None), MemoryTierHandle):
        raise UnavailableError(f"model: memory tier {getattr(model, _TIER_ATTR).tier.name!r} is already applied; "
                           f"reload the model to use another tier")
    if compute_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"compute_dtype: expected torch.bfloat16, torch.float16 or torch.float32, got {compute_dtype}")
    if device is None:
        dev = _default_accelerator() if _accelerator_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
    if tier.needs_accelerator:
        if not _accelerator_available():
            raise UnavailableError(f"tier {tier.name!r}: needs a CUDA, XPU or MPS accelerator, but none is available on "
                               f"this machine; on the CPU use tier 'resident' (or the lossy 'fp8' / 'int8')")
        if tier.placement.startswith("group") and dev.type not in ("cuda", "xpu"):
            raise UnavailableError(f"tier {tier.name!r}: group offloading streams weights with CUDA/XPU streams; "
                               f"device must be a CUDA or XPU device, got {dev}")
    if tier.needs_torchao:
        _require_torchao()
    disk = None
    if tier.placement == "group_block_disk":
        disk = Path(offload_dir) if offload_dir is not None else Path(tempfile.mkdtemp(prefix="worldstereo-offload-"))
        disk.mkdir(parents=True, exist_ok=True)
        logger.info("group_offload_disk: offloaded weights go to %s", disk)
    handle = _apply_tier(model, tier, dev, use_stream=tier.placement.startswith("group"), offload_dir=disk,
                         compute_dtype=compute_dtype)
    logger.info("memory tier %s on %s: %s", tier.name, dev, handle.placements)
    return handle


def _apply_tier(model: nn.Module, tier: MemoryTier, device: torch.device, *, use_stream: bool,
                offload_dir: Path | None = None, compute_dtype: torch.dtype = torch.bfloat16) -> MemoryTierHandle:
    """Convert the weights and place the components (no checks: see :func:`enable_memory_tier`).
    ``use_stream=False`` with ``device="cpu"`` runs the group-offloading hooks on a CPU-only machine
    (tests of their placement logic)."""
    transformer, encoders = _components_of(model)
    placements = _convert_weights(tier, transformer, encoders, compute_dtype)
    placed, offload = _place(tier, model, transformer, encoders, device, use_stream, offload_dir)
    for name, how in placed.items():
        placements[name] = f"{placements[name]}; {how}" if name in placements else how
    handle = MemoryTierHandle(tier=tier, execution_device=device, placements=placements, offload=offload,
                              offload_dir=offload_dir)
    object.__setattr__(model, _TIER_ATTR, handle)
    return handle
