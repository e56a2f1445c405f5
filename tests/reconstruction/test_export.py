import json

import numpy as np
import pytest
import torch
import trimesh

from worldstereo.io.ply import read_ply
from worldstereo.reconstruction import reconstruct
from worldstereo.reconstruction._common import camera_arrays
from worldstereo.reconstruction.export import (
    GAUSSIAN_SH_C0,
    read_colmap_text,
    read_transforms_json,
    read_worldmirror_cameras,
    save_reconstruction,
    write_colmap_text,
    write_gaussians_ply,
    write_transforms_json,
    write_worldmirror,
)

from ._scene import make_trajectory, ring_cameras


@pytest.fixture(scope="module")
def cams():
    c = ring_cameras(5, size=48)
    K = np.asarray(c.K, dtype=np.float64).copy()
    K[:, 0, 0] *= 1.1  # fx != fy
    K[:, 0, 2] += 1.5
    return make_trajectory(np.asarray(c.w2c, dtype=np.float64), K, 48, 48)


def _assert_same(a, b):
    np.testing.assert_allclose(a.w2c, b.w2c, atol=1e-6)
    np.testing.assert_allclose(a.K, b.K, atol=1e-4)
    assert (a.height, a.width) == (b.height, b.width)


def test_transforms_json_round_trip(tmp_path, cams):
    frames = torch.rand(5, 3, 48, 48)
    path = write_transforms_json(tmp_path, cams, frames)
    back, files = read_transforms_json(path)
    _assert_same(back, camera_arrays(cams))
    assert all((tmp_path / f).exists() for f in files)
    doc = json.loads(path.read_text())
    c2w_gl = np.asarray(doc["frames"][0]["transform_matrix"])
    c2w_cv = np.linalg.inv(camera_arrays(cams).w2c[0])
    # OpenGL: camera looks along -z, i.e. the OpenCV +z axis negated
    np.testing.assert_allclose(c2w_gl[:3, 2], -c2w_cv[:3, 2], atol=1e-6)
    # nerfstudio puts pixel centres at +0.5 like the library: cx/cy are written unshifted
    K0 = camera_arrays(cams).K[0]
    assert doc["frames"][0]["cx"] == pytest.approx(K0[0, 2]) and doc["frames"][0]["cy"] == pytest.approx(K0[1, 2])
    try:
        from worldstereo.camera import CameraTrajectory
        other = CameraTrajectory.from_transforms_json(path)
    except (ImportError, AttributeError, NotImplementedError):
        return
    _assert_same(camera_arrays(other), camera_arrays(cams))


def test_colmap_round_trip(tmp_path, cams):
    pts = np.random.default_rng(0).normal(size=(30, 3))
    cols = np.random.default_rng(1).uniform(size=(30, 3))
    write_colmap_text(tmp_path, cams, pts, cols, names=[f"f{i}" for i in range(5)])
    back, names, p2, c2 = read_colmap_text(tmp_path)
    _assert_same(back, camera_arrays(cams))
    assert names == [f"f{i}.png" for i in range(5)]
    np.testing.assert_allclose(p2, pts, atol=1e-12)
    np.testing.assert_allclose(c2, np.round(cols * 255) / 255, atol=1e-9)
    # COLMAP convention: qvec/tvec are world-to-camera, the camera centre is -R^T t
    line = next(ln for ln in (tmp_path / "images.txt").read_text().splitlines() if ln and not ln.startswith("#"))
    t = np.array([float(x) for x in line.split()[5:8]])
    np.testing.assert_allclose(t, camera_arrays(cams).w2c[0, :3, 3], atol=1e-9)
    # COLMAP's top-left pixel centre is (0.5, 0.5), as in the library: PINHOLE fx fy cx cy = K, unshifted
    cam_line = next(ln for ln in (tmp_path / "cameras.txt").read_text().splitlines() if ln and not ln.startswith("#"))
    K0 = camera_arrays(cams).K[0]
    np.testing.assert_allclose([float(x) for x in cam_line.split()[4:8]], [K0[0, 0], K0[1, 1], K0[0, 2], K0[1, 2]],
                               rtol=1e-6)


def test_worldmirror_round_trip(tmp_path, cams):
    frames = torch.rand(5, 3, 48, 48)
    ids = [f"renders-traj_up-{i:04d}" for i in range(5)]
    path = write_worldmirror(tmp_path, cams, frames, camera_ids=ids)
    doc = json.loads(path.read_text())
    assert doc["num_cameras"] == 5 and doc["extrinsics"][0]["camera_id"] == ids[0]
    np.testing.assert_allclose(np.asarray(doc["extrinsics"][2]["matrix"]), np.linalg.inv(camera_arrays(cams).w2c[2]),
                               atol=1e-9)
    back, ids2 = read_worldmirror_cameras(path)
    assert ids2 == ids
    _assert_same(back, camera_arrays(cams))


def test_gaussians_ply_layout(tmp_path):
    n = 7
    rng = np.random.default_rng(2)
    mu, rgb = rng.normal(size=(n, 3)), rng.uniform(size=(n, 3))
    op, sc = rng.uniform(0.1, 0.9, n), rng.uniform(0.01, 0.1, (n, 3))
    path = write_gaussians_ply(tmp_path / "g.ply", mu, rgb, op, sc)
    d = read_ply(path)
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{k}" for k in range(45)] + \
        ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = path.read_bytes().split(b"end_header")[0].decode()
    names = [ln.split()[-1] for ln in header.splitlines() if ln.startswith("property")]
    assert names == expected
    np.testing.assert_allclose(d["f_dc_1"] * GAUSSIAN_SH_C0 + 0.5, rgb[:, 1], atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-d["opacity"])), op, atol=1e-6)
    np.testing.assert_allclose(np.exp(d["scale_2"]), sc[:, 2], rtol=1e-5)
    np.testing.assert_allclose(d["rot_0"], 1.0)


def test_save_reconstruction_all_formats_load_back(tmp_path):
    from ._scene import render_views

    cams = ring_cameras(4, size=40)
    frames, depth = render_views(cams)
    rec = reconstruct(torch.from_numpy(frames).float(), cams, "mesh", torch.from_numpy(depth).float(),
                      progress=False, compute_metrics=False)
    written = save_reconstruction(rec, tmp_path, frames=torch.from_numpy(frames).float(),
                                  formats=["ply", "mesh_glb", "mesh_obj", "mesh_ply", "transforms", "colmap",
                                           "worldmirror", "viewer"])
    pc = trimesh.load(written["ply"])
    np.testing.assert_allclose(np.asarray(pc.vertices), rec.points.numpy(), atol=1e-5)
    for key in ("mesh_glb", "mesh_obj", "mesh_ply"):
        m = trimesh.load(written[key], force="mesh")
        assert len(m.faces) == len(rec.mesh.faces)
        np.testing.assert_allclose(np.sort(m.bounds, 0), np.sort(rec.mesh.bounds, 0), atol=1e-4)
    ref = camera_arrays(cams)
    _assert_same(read_transforms_json(written["transforms"])[0], ref)
    _assert_same(read_colmap_text(written["colmap"])[0], ref)
    _assert_same(read_worldmirror_cameras(written["worldmirror"])[0], ref)
    assert (tmp_path / "colmap" / "images" / "00000.png").exists()
    assert written["viewer"].read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.rglob("*.tmp*")]
    with pytest.raises(ValueError, match="formats"):
        save_reconstruction(rec, tmp_path, formats=["gaussians"])
    with pytest.raises(ValueError, match="formats"):
        save_reconstruction(rec, tmp_path, formats=["stl"])


def _golden_exports(out):
    """The exports of fixed cameras / frames / points (inputs of data/export_golden_sha256.json)."""
    from types import SimpleNamespace

    from worldstereo.reconstruction.export import write_points_ply
    from worldstereo.reconstruction.viewer import write_viewer

    c = ring_cameras(3, size=24)
    K = np.asarray(c.K, dtype=np.float64).copy()
    K[:, 0, 0] *= 1.1
    K[:, 0, 2] += 1.5
    cams = make_trajectory(np.asarray(c.w2c, dtype=np.float64), K, 24, 24)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 3, 24, 24, generator=g)
    pts = torch.randn(7, 3, generator=g, dtype=torch.float64)
    cols = torch.rand(7, 3, generator=g, dtype=torch.float64)
    nrm = torch.nn.functional.normalize(torch.randn(7, 3, generator=g), dim=1)
    write_transforms_json(out / "nerfstudio", cams, frames, ply_file_path="../points.ply")
    write_colmap_text(out / "colmap", cams, pts, cols, frames=frames)
    write_worldmirror(out / "worldmirror", cams, frames, camera_ids=["a", "b", "c"])
    write_points_ply(out / "points.ply", pts, cols, nrm)
    write_gaussians_ply(out / "gaussians.ply", pts, cols, torch.rand(7, generator=g) * 0.8 + 0.1,
                        torch.rand(7, generator=g) * 0.1 + 0.01)
    write_viewer(out / "viewer.html", SimpleNamespace(points=pts, colors=cols, cameras=cams, method="point_cloud",
                                                      mesh=None))
    return frames


def test_exports_are_byte_identical_to_the_numpy_implementation(tmp_path):
    """Camera files, point / Gaussian PLYs and the viewer page are byte for byte what the NumPy
    implementation wrote (hashes recorded with it); the images hold the frames."""
    import hashlib
    from pathlib import Path

    from PIL import Image

    frames = _golden_exports(tmp_path)
    golden = json.loads((Path(__file__).parent / "data" / "export_golden_sha256.json").read_text())
    golden.pop("_comment")
    for rel, digest in golden.items():
        assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest, rel
    u8 = np.asarray(Image.open(tmp_path / "colmap" / "images" / "00001.png"))
    np.testing.assert_array_equal(u8, np.clip(frames[1].numpy().transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8))
