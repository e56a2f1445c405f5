"""Memory/speed optimisations: memory-efficient attention and model-level CPU offload.

* :func:`enable_xformers_memory_efficient_attention` switches every attention layer of a WorldStereo
  model (or a bare transformer) to xFormers when it is importable, else to PyTorch
  ``scaled_dot_product_attention`` with one warning.
* :func:`enable_model_cpu_offload` keeps each big component on the CPU and moves it to the
  accelerator only around its own forward (like diffusers' ``enable_model_cpu_offload``), with the
  ControlNet branch of the transformer treated as a component of its own: while the ControlNet runs,
  the backbone waits on the CPU, so at most one big component occupies the accelerator.
"""

from __future__ import annotations

import functools
from collections import deque
import importlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "ModelOffloadHandle",
    "enable_model_cpu_offload",
    "enable_xformers_memory_efficient_attention",
    "execution_device",
]

logger = logging.getLogger(__name__)

#: Components looked up on a WorldStereo model, in offload order (attribute names).
_ENCODER_ATTRS = ("text_encoder", "image_encoder", "vae")
#: Methods (besides ``forward``) through which a component is used (VAE encode/decode, ControlNet embed).
_ENTRY_METHODS = ("encode", "decode", "embed")
_HANDLE_ATTR = "_worldstereo_offload_handle"


# ------------------------------------------------------------------------------------------ attention
def _xformers_usable() -> bool:
    """Whether ``xformers.ops`` imports (a broken installation counts as absent)."""
    try:
        importlib.import_module("xformers.ops")
    except Exception:  # noqa: BLE001  (ImportError, or a broken binary raising anything)
        return False
    return True


def _transformer_of(model: nn.Module) -> nn.Module:
    inner = getattr(model, "transformer", None)
    return inner if isinstance(inner, nn.Module) else model


def _set_backend_on(module: nn.Module, backend: str) -> bool:
    """Set the attention backend of ``module`` if it offers a way; returns whether it did."""
    setter = getattr(module, "set_attention_backend", None)
    if callable(setter):
        try:
            from diffusers import ModelMixin  # noqa: PLC0415

            uses_diffusers_names = isinstance(module, ModelMixin) and \
                type(module).set_attention_backend is ModelMixin.set_attention_backend
        except ImportError:  # pragma: no cover - diffusers is a dependency
            uses_diffusers_names = False
        setter("native" if (uses_diffusers_names and backend == "sdpa") else backend)
        return True
    done = False
    for sub in module.modules():  # our attention processors expose set_backend(...)
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
    module's own ``set_attention_backend(name)`` is preferred (our transformer: ``"xformers"`` /
    ``"sdpa"``; diffusers models: ``"xformers"`` / ``"native"``); otherwise attention processors with
    ``set_backend`` or diffusers' ``set_use_memory_efficient_attention_xformers`` are switched.

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
    targets = [transformer]
    controlnet = getattr(transformer, "controlnet", None)
    if isinstance(controlnet, nn.Module) and callable(getattr(controlnet, "set_attention_backend", None)):
        targets.append(controlnet)
    changed = [_set_backend_on(m, backend) for m in targets]
    if not any(changed):
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


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


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


def _install(handle: ModelOffloadHandle, comp: _Component) -> None:
    handle._components[comp.name] = comp
    name, module, device = comp.name, comp.module, handle.execution_device

    def pre_hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        handle._enter(name)
        return _to_device(args, device), _to_device(kwargs, device)

    def post_hook(_mod: nn.Module, _args: Any, _out: Any) -> None:
        handle._exit(name)

    h1 = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    h2 = module.register_forward_hook(post_hook, always_call=True)
    handle._removers += [h1.remove, h2.remove]

    for meth in _ENTRY_METHODS:
        original = getattr(module, meth, None)
        if not callable(original) or meth in module.__dict__:
            continue

        def make_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                handle._enter(name)
                try:
                    return fn(*_to_device(args, device), **_to_device(kwargs, device))
                finally:
                    handle._exit(name)
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
        RuntimeError: no accelerator (CUDA, XPU or MPS) is available on this machine.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (WorldStereo model or transformer), "
                        f"got {type(model).__name__}")
    if not _accelerator_available():
        raise RuntimeError("enable_model_cpu_offload: expected a CUDA, XPU or MPS accelerator, but none is "
                           "available on this machine; CPU offload only helps when the model runs on an "
                           "accelerator - run on the CPU without it (device='cpu')")
    exec_device = torch.device(device) if device is not None else _default_accelerator()
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
    """Device the model computes on: the accelerator of :func:`enable_model_cpu_offload` when
    offload is enabled (its weights then rest on the CPU), else the device of its parameters."""
    handle = getattr(model, _HANDLE_ATTR, None)
    if isinstance(handle, ModelOffloadHandle):
        return handle.execution_device
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
