"""Readers of reference-layout input folders: synthetic folders we write ourselves (known order,
captions, cameras, videos) and, when present, the reference's own examples (../shared/examples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.io.image import save_image
from worldstereo.io.reference_inputs import (
    detect_input_kind,
    read_condition_image,
    read_pano_bank,
    read_reference_inputs,
    read_render,
    read_trajectory_camera,
)
from worldstereo.io.video import write_video

T = 5  # poses / frames per synthetic trajectory


def _save(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, image)


def _camera_json(path: Path, n: int = T, size: tuple[int, int] | None = (32, 48), f: float = 40.0) -> None:
    w2c = torch.eye(4).repeat(n, 1, 1)
    w2c[:, 0, 3] = torch.arange(n, dtype=torch.float32) * 0.1
    K = torch.tensor([[f, 0.0, 24.0], [0.0, f, 16.0], [0.0, 0.0, 1.0]]).repeat(n, 1, 1)
    doc = {"extrinsic": w2c.tolist(), "intrinsic": K.tolist()}
    if size is not None:
        doc.update(height=size[0], width=size[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _trajectory_folder(folder: Path, caption: str | None = None) -> None:
    _camera_json(folder / "camera.json")  # creates the folder
    video = torch.linspace(0, 1, T)[:, None, None, None].expand(T, 3, 32, 48).contiguous()
    mask = torch.zeros(T, 3, 32, 48)
    mask[:, :, :, 24:] = 1.0
    write_video(folder / "render.mp4", video)
    write_video(folder / "render_mask.mp4", mask)
    if caption is not None:
        (folder / "traj_caption.json").write_text(json.dumps({"prompt": caption}))


@pytest.fixture(scope="module")
def panorama(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pano") / "scene"
    for i in range(3):
        _save(root / "pano_bank" / "images" / f"{i:04d}.png", torch.full((3, 32, 48), i / 4))
    cams = {f"{i:04d}": {"extrinsic": torch.eye(4).tolist(),
                         "intrinsic": [[20.0 + i, 0, 24], [0, 20.0 + i, 16], [0, 0, 1]]} for i in range(3)}
    (root / "pano_bank" / "cameras.json").write_text(json.dumps(cams))
    for view, trajs in (("view0", ("traj0", "traj1", "traj2")), ("view-1", ("traj2",)), ("view2", ("traj0",)),
                        ("reconstruct_0", ("traj0", "traj1")), ("target0", ("traj1", "traj0"))):
        _save(root / view / "start_frame.png", torch.rand(3, 32, 48))
        for t in trajs:
            _trajectory_folder(root / view / t, caption=f"{view} {t}")
    (root / "view2" / "valid_analysis.json").write_text(json.dumps({"valid": "no"}))
    return root


def test_panorama_order_follows_sort_trajs(panorama):
    inputs = read_reference_inputs(panorama)
    assert inputs.kind == "panorama" and detect_input_kind(panorama) == "panorama"
    # views sorted by folder name ("view-1" < "view0"; view2 is invalid, skipped), each traj2 -> traj0 -> traj1,
    # then target*, reconstruct*/traj0, reconstruct*/traj1; "view-1" is named view_1 (the reference renames
    # hyphens to underscores after sorting)
    assert [t.name for t in inputs.trajectories] == [
        "view_1/traj2", "view0/traj2", "view0/traj0", "view0/traj1", "target0/traj0", "target0/traj1",
        "reconstruct_0/traj0", "reconstruct_0/traj1"]
    by_name = {t.name: t for t in inputs.trajectories}
    assert by_name["view_1/traj2"].folder == panorama / "view-1" / "traj2"
    assert by_name["view0/traj1"].prompt == "view0 traj1"
    assert by_name["view0/traj1"].condition_image == panorama / "view0" / "start_frame.png"
    it = by_name["reconstruct_0/traj1"]
    assert it.condition_image is None and it.iterative_source == "reconstruct_0/traj0"
    assert "last generated frame" in it.describe()["condition_image"]


def test_pano_bank(panorama):
    images, w2c, K, keys = read_pano_bank(panorama / "pano_bank")
    assert keys == ["0000", "0001", "0002"] and images.shape == (3, 3, 32, 48)
    assert torch.allclose(images[:, 0, 0, 0], torch.tensor([0.0, 0.25, 0.5]), atol=1 / 255)
    assert K[:, 0, 0].tolist() == [20.0, 21.0, 22.0] and torch.equal(w2c, torch.eye(4, dtype=torch.float64).expand(3, 4, 4))


def test_read_render_subsamples_and_takes_the_mask_channel(panorama):
    folder = panorama / "view0" / "traj0"
    video, mask = read_render(folder / "render.mp4", folder / "render_mask.mp4", [0, 2, 4])
    assert video.shape == (3, 3, 32, 48) and mask.shape == (3, 1, 32, 48)
    # frame k of the file has grey level k / (T - 1)
    assert torch.allclose(video.mean(dim=(1, 2, 3)), torch.tensor([0.0, 0.5, 1.0]), atol=0.02)
    assert (mask[:, :, :, :20] < 0.1).all() and (mask[:, :, :, 28:] > 0.9).all()
    with pytest.raises(ValueError, match="out of range"):
        read_render(folder / "render.mp4", folder / "render_mask.mp4", [0, T])


def test_reconstruction_folder_and_camera_size_from_the_image(tmp_path):
    root = tmp_path / "kitchen"
    _save(root / "image.png", torch.rand(3, 64, 96))  # twice the size the camera.json keys state
    (root / "prompt.json").write_text(json.dumps({"prompt": "a kitchen"}))
    for t in ("traj_left", "traj_up", "traj_eloop", "traj_extra"):
        _trajectory_folder(root / "renders" / t)
    inputs = read_reference_inputs(root)
    assert inputs.kind == "reconstruction" and inputs.prompt == "a kitchen"
    assert [t.name for t in inputs.trajectories] == ["renders/traj_eloop", "renders/traj_up", "renders/traj_left"]
    assert inputs.bank_camera == root / "renders" / "traj_eloop" / "camera.json"
    # the intrinsics refer to image.png's size (the reference ignores the width/height keys)
    traj = read_trajectory_camera(inputs.trajectories[0].camera, inputs.image)
    assert (traj.height, traj.width) == (64, 96)
    assert traj.resized(32, 48).K[0, 0, 0].item() == pytest.approx(20.0)
    # without an image (iterative trajectories): the file's keys
    assert (read_trajectory_camera(inputs.trajectories[0].camera, None).height) == 32


def test_images_folder_and_condition_image(tmp_path):
    root = tmp_path / "scene"
    img = torch.rand(3, 40, 60)
    _save(root / "image.png", img)
    _camera_json(root / "camera.json", n=81, size=None)
    (root / "prompt.json").write_text(json.dumps({"short caption": "s", "long caption": "the long one"}))
    inputs = read_reference_inputs(root)
    assert inputs.kind == "images" and inputs.prompt == "the long one" and inputs.trajectories == []
    small = read_condition_image(root / "image.png", 20, 30)
    with Image.open(root / "image.png") as im:  # PIL bicubic, as the reference resizes
        ref = torch.from_numpy(np.array(im.resize((30, 20), Image.Resampling.BICUBIC)))
    assert torch.equal((small * 255).round().to(torch.uint8), ref.permute(2, 0, 1))


@pytest.mark.parametrize("break_it,match", [
    (lambda r: (r / "renders" / "traj_eloop" / "render_mask.mp4").unlink(), "render_mask.mp4"),
    (lambda r: (r / "prompt.json").write_text("{}"), "prompt"),
    (lambda r: (r / "prompt.json").write_text("not json"), "JSON"),
    (lambda r: _camera_json(r / "renders" / "traj_eloop" / "camera.json", n=T + 1), "frames"),
])
def test_broken_folders_name_the_file(tmp_path, break_it, match):
    root = tmp_path / "scene"
    _save(root / "image.png", torch.rand(3, 32, 48))
    (root / "prompt.json").write_text(json.dumps({"prompt": "p"}))
    _trajectory_folder(root / "renders" / "traj_eloop")
    break_it(root)
    with pytest.raises((FileNotFoundError, ValueError), match=match):
        read_reference_inputs(root)


def test_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="inputs.*layout"):
        read_reference_inputs(tmp_path)
    with pytest.raises(FileNotFoundError, match="inputs"):
        read_reference_inputs(tmp_path / "missing")


def test_reference_examples(examples_dir):
    """The reference's own example folders: kinds, generation orders and captions."""
    pano = next((examples_dir / "panorama").iterdir())
    inputs = read_reference_inputs(pano)
    assert [t.name for t in inputs.trajectories] == ["view0/traj2", "view0/traj0", "view0/traj1",
                                                     "reconstruct_0/traj0", "reconstruct_0/traj1"]
    assert all(t.prompt for t in inputs.trajectories)
    _, w2c, K, keys = read_pano_bank(inputs.pano_bank)
    assert len(keys) == 27 and torch.allclose(torch.linalg.inv(w2c)[:, :3, 3], torch.zeros(27, 3, dtype=w2c.dtype),
                                              atol=1e-6)  # every crop camera at the origin
    for scene in sorted((examples_dir / "reconstruction").iterdir()):
        rec = read_reference_inputs(scene)
        assert [t.traj_id for t in rec.trajectories] == ["traj_eloop", "traj_up", "traj_right", "traj_left"]
        assert {t.view_id for t in rec.trajectories} == {"renders"}
    for scene in sorted((examples_dir / "images").iterdir()):
        img = read_reference_inputs(scene)
        assert img.kind == "images" and len(read_trajectory_camera(img.camera, img.image)) == 81
