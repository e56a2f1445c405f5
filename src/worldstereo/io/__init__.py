"""File input/output: PLY point clouds, atomic writes (video and image helpers live in sibling modules).

Sub-modules are imported explicitly (``from worldstereo.io.ply import read_ply``); this package
initialiser imports nothing so that optional dependencies of one module never affect another.
"""
