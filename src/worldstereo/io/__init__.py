"""File input/output: images, videos, PLY point clouds, atomic writes and output folders, safe reading.

Sub-modules are imported explicitly (``from worldstereo.io.ply import read_ply``); this package
initialiser imports nothing so that optional dependencies of one module never affect another.

* :mod:`~worldstereo.io.errors` — :class:`InputFileError`, the ``ValueError`` every reader raises;
* :mod:`~worldstereo.io.limits` — size limits checked before allocating;
* :mod:`~worldstereo.io.files` — checked text / strict JSON / ``.npy`` / ``.npz`` reading;
* :mod:`~worldstereo.io.paths` — names from data made safe, paths confined to a folder;
* :mod:`~worldstereo.io.atomic` — atomic single-file writes;
* :mod:`~worldstereo.io.output_folder` — transactional output folders (old or new, never a mix);
* :mod:`~worldstereo.io.image`, :mod:`~worldstereo.io.video`, :mod:`~worldstereo.io.ply` — formats.

See ``docs/reliability.md``.
"""
