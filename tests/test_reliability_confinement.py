"""Confinement: no exporter writes outside the folder it is given, whatever names the data holds.

Each exporter runs in a sandbox ``tmp/sandbox`` with its folder ``tmp/sandbox/out``; afterwards
nothing in the sandbox may have changed outside ``out``, and every file under ``out`` must resolve
inside it. :func:`test_every_folder_exporter_is_covered` enumerates the library's functions that
take an output folder, so a new exporter cannot be added without being checked here.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.io.paths import is_inside, safe_child, sanitize_name, unique_names

HOSTILE = ["../../../escaped", "/abs/escaped", "a/../../b", "..", ".", "", "CON", "nul.txt", "x\x00y", "dir\\..\\z",
           "é" * 200, "dup", "DUP", "dup", " spaced name ", "-rf", "..\\..\\win", "ok_name"]
N = len(HOSTILE)
H, W = 8, 12


def _traj(n: int = N) -> CameraTrajectory:
    return CameraTrajectory.preset("orbit", num_frames=n, height=H, width=W)


def _frames(n: int = N) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(0))


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if "out" not in p.relative_to(root).parts[:1]}


def _memory(names):
    from worldstereo.memory import SpatialStereoMemory

    names = list(dict.fromkeys(names))  # the bank itself refuses exact duplicates
    mem = SpatialStereoMemory(memory_size=64)
    traj = _traj(len(names))
    mem.add(_frames(len(names)), traj.w2c, traj.K, names=names)
    return mem


def _reconstruction():
    from worldstereo.reconstruction import Reconstruction

    pts = torch.rand(50, 3)
    return Reconstruction(points=pts, colors=torch.rand(50, 3), normals=None, cameras=_traj(), method="point_cloud")


def _exporters() -> dict[str, Callable[[Path], Any]]:
    from worldstereo.commands import generate, render
    from worldstereo.pipeline import SceneMemory
    from worldstereo.reconstruction import export

    def write_render_inputs(out):
        traj = CameraTrajectory.preset("forward", num_frames=3, height=H, width=W, distance=0.1)
        render.write_render_inputs(out, torch.rand(3, H, W), torch.full((H, W), 2.0), traj, progress=False)

    def write_video_outputs(out):
        record = SimpleNamespace(render_video=torch.rand(3, 3, H, W), render_mask=torch.zeros(3, 1, H, W),
                                 render_depth=torch.rand(3, 1, H, W))
        generate.write_video_outputs(out, "", torch.rand(3, 3, H, W), record, _traj(3), fps=8)

    def write_memory_outputs(out):
        from worldstereo.geometry import PointCloud
        from worldstereo.memory import GlobalGeometricMemory

        geo = GlobalGeometricMemory()
        geo.points = PointCloud(torch.rand(10, 3), torch.rand(10, 3))
        generate.write_memory_outputs(out, SceneMemory(geometric=geo, spatial=_memory(HOSTILE)))

    return {
        "export.write_colmap_text": lambda out: export.write_colmap_text(out, _traj(), torch.rand(5, 3), names=HOSTILE,
                                                                       frames=_frames()),
        "export.write_transforms_json": lambda out: export.write_transforms_json(out, _traj(), _frames(),
                                                                               names=HOSTILE),
        "export.write_worldmirror": lambda out: export.write_worldmirror(out, _traj(), _frames(), camera_ids=HOSTILE),
        "export.save_reconstruction": lambda out: export.save_reconstruction(_reconstruction(), out, frames=_frames()),
        "Reconstruction.save": lambda out: _reconstruction().save(out, formats=("ply", "colmap")),
        "SpatialStereoMemory.export_worldmirror": lambda out: _memory(HOSTILE).export_worldmirror(out),
        "render.write_render_inputs": write_render_inputs,
        "generate.write_video_outputs": write_video_outputs,
        "generate.write_memory_outputs": write_memory_outputs,
        "generate.write_summary": lambda out: generate.write_summary(out, {"a": 1}),
    }


def test_every_folder_exporter_is_covered():
    """Every public function / method of these modules whose first argument is an output folder is
    in :func:`_exporters`."""
    import worldstereo.commands.generate as generate
    import worldstereo.commands.render as render
    import worldstereo.memory.spatial as spatial
    import worldstereo.reconstruction.api as api
    import worldstereo.reconstruction.export as export

    found = set()
    for prefix, owner in (("export", export), ("render", render), ("generate", generate),
                          ("SpatialStereoMemory", spatial.SpatialStereoMemory), ("Reconstruction", api.Reconstruction)):
        for name, fn in vars(owner).items():
            fn = getattr(fn, "__func__", fn)
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            if inspect.ismodule(owner) and fn.__module__ != owner.__name__:
                continue
            params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
            if set(params[:2]) & {"out_dir", "out", "folder", "save_directory"}:
                found.add(f"{prefix}.{name}")
    assert found == set(_exporters()), found ^ set(_exporters())


@pytest.mark.parametrize("name", sorted(_exporters()))
def test_exporter_stays_inside_its_folder(name, tmp_path):
    sandbox = tmp_path / "sandbox"
    (sandbox / "sibling").mkdir(parents=True)
    (sandbox / "sibling" / "keep.txt").write_text("x")
    out = sandbox / "out"
    out.mkdir()
    before = _snapshot(sandbox)
    _exporters()[name](out)
    assert _snapshot(sandbox) == before, "something was written outside the output folder"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written, "the exporter wrote nothing"
    for p in written:
        assert is_inside(p, out), p
        assert all(part not in ("..", "") for part in p.relative_to(out).parts)
    assert not (tmp_path / "escaped").exists() and not Path("/abs/escaped").exists()


def test_colmap_names_escape_nothing_and_match_the_written_images(tmp_path):
    """The issue's example: ``names=["../../../escaped", ...]`` writes nothing outside ``out``, and
    images.txt names exactly the files written (so the model stays readable)."""
    from worldstereo.reconstruction.export import read_colmap_text, write_colmap_text

    out = tmp_path / "a" / "b" / "out"
    write_colmap_text(out, _traj(), names=HOSTILE, frames=_frames())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    images = sorted(p.name for p in (out / "images").iterdir())
    assert len(images) == N  # unique even for "dup"/"DUP"/"dup" and for names that sanitise alike
    assert len({n.lower() for n in images}) == N
    cams, names, _, _ = read_colmap_text(out)
    assert sorted(names) == images
    assert len(cams) == N


def test_symlinked_subfolder_is_refused(tmp_path):
    from worldstereo.reconstruction.export import save_reconstruction, write_colmap_text

    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "images")
    with pytest.raises(ValueError, match="outside"):
        write_colmap_text(out, _traj(), names=["a"] * N, frames=_frames())
    os.symlink(outside, out / "colmap")
    with pytest.raises(ValueError, match="symbolic link"):
        save_reconstruction(_reconstruction(), out, formats=["colmap"])
    assert list(outside.iterdir()) == []


def test_reading_a_bank_never_leaves_its_folder(tmp_path):
    """Camera ids read from a file are not followed outside the bank folder."""
    from worldstereo.io.errors import InputFileError
    from worldstereo.memory import SpatialStereoMemory
    from worldstereo.reconstruction.export import read_worldmirror_cameras

    secret = tmp_path / "secret.png"
    from PIL import Image

    Image.new("RGB", (W, H)).save(secret)
    bank = tmp_path / "bank"
    (bank / "images").mkdir(parents=True)
    doc = {"extrinsics": [{"camera_id": "../../secret", "matrix": np.eye(4).tolist()}],
           "intrinsics": [{"camera_id": "../../secret", "matrix": [[5, 0, 6], [0, 5, 4], [0, 0, 1]]}]}
    (bank / "cameras.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="outside|relative path"):
        SpatialStereoMemory.load_worldmirror(bank)
    with pytest.raises(InputFileError, match="outside|relative path"):
        read_worldmirror_cameras(bank / "cameras.json")


@pytest.mark.parametrize("name, expected", [
    ("frame_0001", "frame_0001"), ("clip0/0001", "clip0-0001"), ("../../../escaped", "escaped"),
    ("/abs/x", "abs-x"), ("..", "unnamed-"), ("", "unnamed"), ("CON", "_CON"), ("nul.txt", "_nul.txt"),
    ("x\x00y", "x-y"), ("a b\tc\nd", "a-b-c-d"), (".hidden", "hidden"), ("-rf", "rf"), ("trail. ", "trail"),
    ("é", "é"), (7, "7"),
])
def test_sanitize_name(name, expected):
    out = sanitize_name(name)
    assert out.startswith(expected) if expected.endswith("-") else out == expected
    assert "/" not in out and "\\" not in out and "\x00" not in out and out not in (".", "..", "")


def test_sanitize_name_limits_length_and_keeps_names_distinct():
    a, b = sanitize_name("x" * 500 + "a"), sanitize_name("x" * 500 + "b")
    assert len(a.encode()) <= 160 and len(b.encode()) <= 160 and a != b
    assert unique_names(["a", "A", "a", "a_1"]) == ["a", "A_1", "a_2", "a_1_1"]
    with pytest.raises(ValueError, match="string"):
        sanitize_name(None)


@pytest.mark.parametrize("parts", [("..", "x"), ("/etc/passwd",), ("a/../../b",), ("a\x00b",), ("",), ("C:x",)])
def test_safe_child_refuses(parts, tmp_path):
    with pytest.raises(ValueError):
        safe_child(tmp_path, *parts)


def test_safe_child_accepts_plain_paths_and_a_final_link(tmp_path):
    assert safe_child(tmp_path, "images", "a.png") == tmp_path / "images" / "a.png"
    os.symlink("/etc/hostname", tmp_path / "link.txt")  # the atomic writers replace the link itself
    assert safe_child(tmp_path, "link.txt") == tmp_path / "link.txt"
