"""Procedurally generated example scenes with exact depth (download-free demo, ground truth for tests)."""

from worldstereo.scenes.room import Box, ProceduralScene, Sphere, make_room_scene

__all__ = ["Box", "ProceduralScene", "Sphere", "make_room_scene"]
