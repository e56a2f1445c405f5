import argparse
import json

import numpy as np
import pytest
import torch
import trimesh

from tests.reconstruction._scene import ground_truth_points, render_views, ring_cameras
from worldstereo.commands import UsageError
from worldstereo.commands import reconstruct as cmd
from worldstereo.io.image import save_image
from worldstereo.reconstruction._common import camera_arrays
from worldstereo.reconstruction.export import (
    read_colmap_text,
    write_colmap_text,
    write_worldmirror,
)
from worldstereo.reconstruction.metrics import point_cloud_scores


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cmd.register(sub)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon_cli")
    cams = ring_cameras(6, size=48)
    frames, depth = render_views(cams)
    fdir = root / "frames"
    fdir.mkdir()
    for i, f in enumerate(frames):
        save_image(fdir / f"{i:03d}.png", torch.from_numpy(f).float())
    np.save(root / "depth.npy", depth.astype(np.float32))
    write_worldmirror(root / "wm", cams)  # no images next to it: size comes from the frames
    write_colmap_text(root / "colmap", cams)
    return {"root": root, "cams": cams, "depth": depth, "frames": frames}


@pytest.mark.parametrize("cam_kind,method", [("wm", "mesh"), ("colmap", "point_cloud")])
def test_reconstruct_command_writes_outputs(inputs, tmp_path, cam_kind, method):
    root = inputs["root"]
    cameras = root / "wm" / "cameras.json" if cam_kind == "wm" else root / "colmap"
    args = _parse(["reconstruct", str(root / "frames"), "--cameras", str(cameras), "--depth",
                   str(root / "depth.npy"), "--out", str(tmp_path / "out"), "--method", method])
    assert args.func(args) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_points"] > 1000
    pts = np.asarray(trimesh.load(out / "points.ply").vertices)
    gt = ground_truth_points(inputs["cams"], factor=1)
    assert point_cloud_scores(pts, gt, tau_fraction=0.01).f1 > 0.9
    if method == "mesh":
        assert len(trimesh.load(out / "mesh.glb", force="mesh").faces) > 100
    else:
        assert not (out / "mesh.glb").exists()
    back = read_colmap_text(out / "colmap")[0]
    np.testing.assert_allclose(back.w2c, camera_arrays(inputs["cams"]).w2c, atol=1e-5)
    assert (out / "viewer.html").exists() and (out / "nerfstudio" / "transforms.json").exists()


def test_reconstruct_command_video_input(inputs, tmp_path):
    from worldstereo.io.video import write_video

    root = inputs["root"]
    write_video(tmp_path / "in.mp4", torch.from_numpy(inputs["frames"]).float())
    args = _parse(["reconstruct", str(tmp_path / "in.mp4"), "--cameras", str(root / "colmap"), "--depth",
                   str(root / "depth.npy"), "--out", str(tmp_path / "out"), "--formats", "ply,viewer"])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "points.ply", "viewer.html"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["reprojection_psnr"] > 20  # lossy video, exact geometry


def test_reconstruct_command_errors(inputs, tmp_path):
    root = inputs["root"]
    args = _parse(["reconstruct", str(root / "frames"), "--cameras", str(root / "wm" / "cameras.json"),
                   "--depth", str(root / "depth.npy"), "--out", str(tmp_path), "--formats", "ply,stl"])
    with pytest.raises(UsageError, match="--formats"):
        args.func(args)
    args = _parse(["reconstruct", str(tmp_path / "missing.mp4"), "--cameras", str(root / "wm" / "cameras.json"),
                   "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="input"):
        args.func(args)
    np.save(tmp_path / "d.npy", inputs["depth"][:3])
    args = _parse(["reconstruct", str(root / "frames"), "--cameras", str(root / "wm" / "cameras.json"),
                   "--depth", str(tmp_path / "d.npy"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="depth"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parse(["reconstruct", "x", "--cameras", "c", "--out", "o", "--method", "voxels"])


def test_cli_main_exit_codes(inputs, tmp_path):
    cli = pytest.importorskip("worldstereo.cli")
    if "reconstruct" not in cli.COMMAND_MODULES:
        pytest.skip("reconstruct is not registered in worldstereo.cli")
    root = inputs["root"]
    rc = cli.main(["reconstruct", str(root / "frames"), "--cameras", str(root / "colmap"), "--depth",
                   str(root / "depth.npy"), "--out", str(tmp_path / "o"), "--formats", "ply"])
    assert rc == 0 and (tmp_path / "o" / "points.ply").exists()
    rc = cli.main(["reconstruct", str(root / "frames"), "--cameras", str(tmp_path / "missing.json"),
                   "--depth", str(root / "depth.npy"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and not (tmp_path / "o2").exists()
