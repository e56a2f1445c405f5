"""Checking a device argument before any work: :func:`check_device`.

Every public function that takes a ``device`` checks it here, so that a typo (``"cuda0"``), a
device this machine does not have (``"cuda"`` without CUDA, ``"cuda:3"`` on a 2-GPU machine,
``"mps"`` off a Mac) or one that cannot hold data (``"meta"``) is refused at once with a message
naming the parameter, instead of a torch error deep inside model loading.
"""

from __future__ import annotations

from typing import Any

import torch

from worldstereo.errors import UnavailableError

__all__ = ["check_device", "parse_device"]


def parse_device(device: Any, name: str = "device") -> torch.device:
    """``device`` (a string such as ``"cpu"``, ``"cuda:1"``, a ``torch.device`` or a CUDA index) as a
    ``torch.device``, without checking that this machine has it.

    Raises:
        TypeError: not a string, ``torch.device`` or integer.
        ValueError: a string that is not a device.
    """
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(f"{name}: expected a device such as 'cpu', 'cuda' or 'cuda:0' (a str or torch.device), "
                        f"got {type(device).__name__} {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"{name}: expected a non-negative CUDA device index, got {device}")
        return torch.device("cuda", device)
    if not device.strip():
        raise ValueError(f"{name}: expected a device such as 'cpu', 'cuda' or 'cuda:0', got an empty string")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{name}: {device!r} is not a torch device; expected e.g. 'cpu', 'cuda' or 'cuda:0'") from None


def _backend_available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    module = getattr(torch, kind, None)
    is_available = getattr(module, "is_available", None)
    try:
        return bool(callable(is_available) and is_available())
    except Exception:  # noqa: BLE001 - a backend that cannot even say counts as absent
        return False


def _device_count(kind: str) -> int | None:
    module = getattr(torch, kind, None)
    count = getattr(module, "device_count", None)
    try:
        return int(count()) if callable(count) else None
    except Exception:  # noqa: BLE001
        return None


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` after checking that this machine can compute on it.

    Raises:
        TypeError / ValueError: not a device (see :func:`parse_device`), or ``"meta"``.
        UnavailableError: (a ``RuntimeError`` and a ``ValueError``) the device type is not available
            here, or its index is beyond the devices present.
    """
    dev = parse_device(device, name)
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise ValueError(f"{name}: the 'meta' device holds no data and cannot run a model; use 'cpu' or an "
                         f"accelerator")
    if not _backend_available(dev.type):
        raise UnavailableError(f"{name}: {str(device)!r} requested but {dev.type.upper()} is not available on this "
                               f"machine; use device='cpu'" + (" (--device cpu)" if name.startswith("--") else ""))
    count = _device_count(dev.type)
    if dev.index is not None and count is not None and dev.index >= count:
        raise UnavailableError(f"{name}: {str(device)!r} requested but this machine has {count} "
                               f"{dev.type.upper()} device(s) (indices 0-{count - 1})")
    return dev
