"""The code examples of the interface document (``shared/docs/api-seed.txt``) run as written.

Each example below is the document's code, verbatim, executed with ``exec``. Only what cannot run
on a CPU test machine is substituted, each substitution named here:

* the hub id ``"worldstereo/worldstereo-v1"`` -> a tiny random model saved with
  ``worldstereo.testing.save_tiny_model`` (no network);
* ``vdm_config={...}`` (an elided config in the document) -> the tiny model's config;
* the names ``generate_video`` / ``enable_model_cpu_offload`` keep their real functions, but
  ``generate_video`` is given ``height=64, width=64, num_inference_steps=2`` unless the example sets
  them, because a 512x512, 50-step run takes far too long on a CPU (the documented 512x512 shape
  therefore becomes 64x64);
* ``.cuda()`` runs on machines with CUDA; elsewhere it is replaced by ``.cpu()``;
* ``scene.jpg`` / ``scene_{i}.jpg`` are written into a temporary working directory first.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import worldstereo
import worldstereo.optimization
from worldstereo.testing import save_tiny_model, tiny_vdm_config

EXAMPLE_BASIC = '''
import torch
from worldstereo import WorldStereo, generate_video, CameraTrajectory
from PIL import Image

# Load model
model = WorldStereo.from_pretrained("worldstereo/worldstereo-v1").cuda()

# Load conditioning image
image = Image.open("scene.jpg")

# Create camera trajectory
trajectory = CameraTrajectory.forward(
    distance=2.0,
    num_frames=16
)

# Generate video
video = generate_video(
    model=model,
    condition_image=image,
    camera_trajectory=trajectory,
    num_frames=16,
    guidance_scale=7.5,
    seed=42
)

print(video.shape)  # (16, 3, 512, 512)
'''

EXAMPLE_MEMORY = '''
# Initialize with custom memory settings
model = WorldStereo(
    vdm_config={...},
    global_memory_config={
        "max_points": 50000,  # Limit point cloud size
        "update_frequency": "manual"  # Control updates manually
    },
    spatial_memory_config={
        "memory_size": 512,  # Smaller memory bank
        "num_correspondences": 32
    }
)

# Disable memory modules for faster generation
video = generate_video(
    model=model,
    condition_image=image,
    camera_trajectory=trajectory,
    use_geometric_memory=False,  # Disable global memory
    use_spatial_memory=False  # Disable spatial memory
)
'''

EXAMPLE_OPTIMIZATION = '''
# Enable xFormers for memory-efficient attention
from worldstereo.optimization import enable_xformers_memory_efficient_attention
enable_xformers_memory_efficient_attention(model)

# Use mixed precision
model = model.half()  # Convert to float16

# Reduce inference steps for speed
video = generate_video(
    model=model,
    condition_image=image,
    camera_trajectory=trajectory,
    num_inference_steps=25,  # Faster, slight quality trade-off
    guidance_scale=7.5
)

# Enable CPU offload for large models
from worldstereo.optimization import enable_model_cpu_offload
enable_model_cpu_offload(model)
'''

EXAMPLE_BATCH = '''
# Generate multiple videos in parallel
images = [Image.open(f"scene_{i}.jpg") for i in range(4)]
trajectories = [CameraTrajectory.forward(distance=2.0) for _ in range(4)]

# Batch process (if GPU memory allows)
videos = []
for img, traj in zip(images, trajectories):
    video = generate_video(
        model=model,
        condition_image=img,
        camera_trajectory=traj,
        num_frames=16
    )
    videos.append(video)
'''

SIZE = 64


def _write_scene_images(folder) -> None:
    rng = np.random.default_rng(0)
    names = ["scene.jpg"] + [f"scene_{i}.jpg" for i in range(4)]
    for name in names:
        pixels = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


def _small_generate_video(**kwargs):
    kwargs.setdefault("height", SIZE)
    kwargs.setdefault("width", SIZE)
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("depth_estimator", _flat_depth)
    from worldstereo.pipeline import generate_video

    return generate_video(**kwargs)


def _flat_depth(image: torch.Tensor):
    from worldstereo.depth import DepthPrediction

    h, w = image.shape[-2:]
    depth = torch.linspace(1.0, 3.0, h)[:, None].expand(h, w).contiguous()
    return DepthPrediction(depth=depth, valid_mask=torch.ones(h, w, dtype=torch.bool), is_metric=False)


def _prepare(code: str, model_dir) -> str:
    code = code.replace('"worldstereo/worldstereo-v1"', repr(str(model_dir)))
    code = code.replace("vdm_config={...}", "vdm_config=TINY_VDM_CONFIG")
    if not torch.cuda.is_available():
        code = code.replace(".cuda()", ".cpu()")
    return code


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-worldstereo")
    return save_tiny_model(folder / "worldstereo-v1", "worldstereo-memory")


def test_interface_examples_run_as_written(model_dir, tmp_path, monkeypatch, capsys):
    _write_scene_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    # the names the examples import resolve to the real objects, with the CPU-sized generate_video
    monkeypatch.setattr(worldstereo, "generate_video", functools.partial(_small_generate_video), raising=False)
    tiny_config = {**tiny_vdm_config("worldstereo-memory"), "tokenizer": str(model_dir / "tokenizer")}
    namespace: dict = {"TINY_VDM_CONFIG": tiny_config}

    exec(_prepare(EXAMPLE_BASIC, model_dir), namespace)
    assert capsys.readouterr().out.strip() == f"torch.Size([16, 3, {SIZE}, {SIZE}])"
    video = namespace["video"]
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0

    exec(_prepare(EXAMPLE_MEMORY, model_dir), namespace)
    model = namespace["model"]
    assert model.global_memory_config["max_points"] == 50000
    assert model.global_memory_config["update_frequency"] == "manual"
    assert model.spatial_memory_config["memory_size"] == 512
    assert model.spatial_memory_config["num_correspondences"] == 32
    assert namespace["video"].shape == (16, 3, SIZE, SIZE)

    namespace["model"] = worldstereo.WorldStereo.from_pretrained(str(model_dir))
    code = _prepare(EXAMPLE_OPTIMIZATION, model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if torch.cuda.is_available():
            exec(code, namespace)
        else:
            # everything up to the offload call runs; the offload itself needs an accelerator
            with pytest.raises(RuntimeError, match="accelerator|CUDA"):
                exec(code, namespace)
    assert namespace["video"].shape == (16, 3, SIZE, SIZE)
    assert next(namespace["model"].transformer.parameters()).dtype == torch.float16

    namespace["model"] = worldstereo.WorldStereo.from_pretrained(str(model_dir))
    exec(_prepare(EXAMPLE_BATCH, model_dir), namespace)
    videos = namespace["videos"]
    assert len(videos) == 4 and all(v.shape == (16, 3, SIZE, SIZE) for v in videos)
    assert not torch.equal(videos[0], videos[1])  # different images (and fresh random seeds)
