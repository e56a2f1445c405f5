"""Reconstruction of the library's procedural room scene (independent textures and geometry)."""

import numpy as np
import pytest
import torch
import trimesh

from worldstereo.reconstruction import point_cloud_scores, reconstruct
from worldstereo.geometry.lifting import unproject_depth

from ._scene import look_at_w2c, make_trajectory

scenes = pytest.importorskip("worldstereo.scenes")


def test_room_scene_point_cloud_and_mesh_f1():
    S, n = 64, 8
    scene = scenes.make_room_scene(0)
    target = np.array([0.0, 0.3, 3.5])
    w2c = np.stack([look_at_w2c(np.array([x, -0.1, 0.0]), target) for x in np.linspace(-0.8, 0.8, n)])
    f = 0.5 * S / np.tan(np.deg2rad(30))
    K = np.array([[f, 0, S / 2], [0, f, S / 2], [0, 0, 1.0]])
    frames, depth = scene.render_many(torch.tensor(w2c), torch.tensor(K), S, S)
    K2 = K.copy()
    K2[:2] *= 2
    _, depth2 = scene.render_many(torch.tensor(w2c), torch.tensor(K2), 2 * S, 2 * S)
    gt = unproject_depth(depth2.double(), torch.from_numpy(K2), torch.from_numpy(w2c)).reshape(-1, 3)
    cams = make_trajectory(w2c, np.stack([K] * n), S, S)
    rec = reconstruct(frames, cams, "point_cloud", depth, progress=False)
    assert point_cloud_scores(rec.points, gt).f1 >= 0.985  # 0.9881 before and after the PyTorch port
    rec = reconstruct(frames, cams, "mesh", depth, progress=False)
    pts, _ = trimesh.sample.sample_surface(rec.mesh, 50000, seed=0)
    assert point_cloud_scores(pts, gt).f1 >= 0.99  # 0.9925 before and after the PyTorch port
