"""WorldStereo model components: config schema, transformer (camera / memory), ControlNet, checkpoints.

Names are imported lazily so that ``import worldstereo.models`` stays cheap; other engineers' modules
(conditioning, VAE, the ``WorldStereo`` wrapper) live in their own sub-modules and are imported from there.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "WorldStereoConfig": ".config",
    "ControlNetConfig": ".config",
    "WanBackboneConfig": ".config",
    "MODEL_TYPES": ".config",
    "MEMORY_MODEL_TYPES": ".config",
    "WorldStereoTransformer": ".transformer",
    "WanXControlNet": ".controlnet",
    "MaskCamEmbed": ".controlnet",
    "WorldStereoBlock": ".memory_block",
    "CheckpointError": ".checkpoint",
    "load_transformer": ".checkpoint",
    "save_transformer": ".checkpoint",
    "load_state_dict_file": ".checkpoint",
    "check_state_dict": ".checkpoint",
    "parameter_dtype": ".checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worldstereo.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
