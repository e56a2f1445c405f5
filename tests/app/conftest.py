"""Fixtures of the app tests: a tiny checkpoint, a view of the procedural room with its exact depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldstereo.camera import intrinsics_from_fov

#: size and field of view of the room photo the tests upload
ROOM_SIZE = (192, 256)
ROOM_FOV = 70.0
#: generation size of the tests (the tiny model works at any multiple of 16)
GEN_SIZE = (96, 128)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random worldstereo-memory checkpoint folder (``save_pretrained`` layout)."""
    from worldstereo.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("app-ckpt") / "tiny", "worldstereo-memory")


@pytest.fixture(scope="session")
def room_files(tmp_path_factory):
    """``room.png`` and ``room_depth.npy``: a view of the procedural room and its exact z-depth."""
    from worldstereo.io.image import save_image
    from worldstereo.scenes import make_room_scene

    folder = tmp_path_factory.mktemp("app-room")
    K = intrinsics_from_fov(*ROOM_SIZE, ROOM_FOV)
    image, depth = make_room_scene(seed=0).render(torch.eye(4), K, *ROOM_SIZE)
    save_image(folder / "room.png", image)
    np.save(folder / "room_depth.npy", depth.numpy())
    return {"image": folder / "room.png", "depth": folder / "room_depth.npy", "depth_map": depth,
            "picture": image}
