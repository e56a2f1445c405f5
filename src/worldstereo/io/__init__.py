"""File input/output: images, videos, PLY point clouds, atomic writes and output folders, safe reading.

``from worldstereo.io import load_image`` works for every name in :data:`__all__`; each is imported
from its sub-module only when first used, so that an optional dependency of one module (PyAV for
video) never affects another. The sub-modules:

* :mod:`~worldstereo.io.errors` — :class:`InputFileError`, the ``ValueError`` every reader raises;
* :mod:`~worldstereo.io.limits` — size limits checked before allocating;
* :mod:`~worldstereo.io.files` — checked text / strict JSON / ``.npy`` / ``.npz`` reading;
* :mod:`~worldstereo.io.paths` — names from data made safe, paths confined to a folder;
* :mod:`~worldstereo.io.atomic` — atomic single-file writes;
* :mod:`~worldstereo.io.output_folder` — transactional output folders (old or new, never a mix);
* :mod:`~worldstereo.io.image`, :mod:`~worldstereo.io.video`, :mod:`~worldstereo.io.ply` — formats.

See ``docs/reliability.md``.
"""

from __future__ import annotations

from worldstereo._lazy import lazy_exports

#: public name -> the sub-module that defines it
_EXPORTS = {
    "load_image": ".image",
    "save_image": ".image",
    "to_pil": ".image",
    "resize_image": ".image",
    "rescale_intrinsics": ".image",
    "resize_image_and_intrinsics": ".image",
    "read_video": ".video",
    "write_video": ".video",
    "frames_to_uint8": ".video",
    "read_ply": ".ply",
    "write_ply": ".ply",
    "PlyFormatError": ".ply",
    "atomic_write": ".atomic",
    "atomic_open": ".atomic",
    "InputFileError": ".errors",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
