"""WorldStereo model components: config schema, transformer (camera / memory), ControlNet, checkpoints.

Names are imported lazily so that ``import worldstereo.models`` stays cheap; the other components
(conditioning, VAE, the ``WorldStereo`` wrapper) live in their own sub-modules and are imported from there.
"""

from __future__ import annotations

from worldstereo._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
