"""Every code example of README.md and docs/*.md runs as written.

What runs:

* every ```python block, in document order, all blocks of one file in one namespace (later blocks
  use the names earlier ones define, as a reader would);
* every command of every ```bash block: each line (``\\`` continuations joined, ``&&`` chains split)
  that starts with ``worldstereo`` runs through :func:`worldstereo.cli.main` and must exit with 0.

Both run in one temporary working folder per document, so a command may read what an earlier one
wrote (``worldstereo demo --out demo_out`` then ``worldstereo reconstruct demo_out ...``). Blocks of
any other language (``json``, plain synopses) are not code.

What cannot run on a CPU test machine without network is substituted, and every substitution is
declared here, in :data:`TEXT_SUBSTITUTIONS`, :data:`CLI_EXTRA_ARGS` and :func:`_stand_ins`:

* the checkpoint ``path/to/WorldStereo`` is a folder with the three variants as tiny random models
  (``worldstereo.testing.save_tiny_model``); the base model ``path/to/Wan2.1-...`` is dropped (the
  tiny models carry their components);
* the default depth model (Depth Anything V2 Small, a download) is a tiny random Depth Anything
  (``worldstereo.testing.save_tiny_depth_model``), and the CLI commands that read an image get
  ``--depth`` with the exact depth of that image (a user depth map);
* the images ``scene.jpg`` / ``room.jpg`` are views of the procedural room (``worldstereo.scenes``),
  and ``image.png`` / ``render.mp4`` / ``render_mask.mp4`` its render along a 21-frame orbit (what
  ``worldstereo render`` writes); ``examples/`` is the reference example folders of
  ``../shared/examples`` (commands that use them are left out when that folder is absent);
* generation runs at 32 x 48 pixels with at most 2 denoising steps and 5 frames (``generate_video``,
  ``generate_multi_view`` and ``reconstruct_3d`` are wrapped, trajectories subsampled; the CLI gets
  ``--height/--width/--steps/--frames``; ``worldstereo.batch.run_batch``, behind ``worldstereo
  batch`` too, gets these as the defaults of its jobs), renders at 96 x 128; ``cuda`` becomes
  ``cpu`` and bfloat16 float32 where there is no CUDA;
* ``jobs.jsonl`` is the jobs file shown in ``docs/cli.md`` (*batch*): jobs on the example images.

A block that cannot run here at all is marked in the document by an HTML comment on the line
before its fence (blank lines allowed)::

    <!-- docs-test: skip (the reason) -->

Keep this rare and always give the reason; today: setting up the environment and running the
test suite itself (README), placing the model on a CUDA GPU (memory tiers: usage.md, performance.md),
launching several processes with torchrun (several GPUs or machines: cli.md).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import worldstereo
import worldstereo.pipeline
from worldstereo.cli import main
from worldstereo.io.image import save_image

REPO = Path(__file__).resolve().parents[1]
#: the reference-format example folders (``../shared/examples``), linked as ``examples/`` when present
EXAMPLES = Path(os.environ.get("WORLDSTEREO_SHARED_DIR", REPO.parent / "shared")) / "examples"
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")

#: generation size, step cap and frame cap of the substituted generation calls
GEN_HEIGHT, GEN_WIDTH, GEN_MAX_STEPS, GEN_MAX_FRAMES = 32, 48, 2, 5
#: size of the example images and of the renders of the CLI examples
IMAGE_HEIGHT, IMAGE_WIDTH = 96, 128

#: (text in the document, replacement, why) applied to every Python block and CLI line
TEXT_SUBSTITUTIONS: list[tuple[str, str, str]] = [
    ('base_model="path/to/Wan2.1-I2V-14B-480P-Diffusers"', "base_model=None",
     "the tiny stand-in checkpoints carry their own base components"),
    ("path/to/WorldStereo", "{checkpoint}", "a folder with the three variants as tiny random models"),
]
if not torch.cuda.is_available():
    TEXT_SUBSTITUTIONS += [
        (".cuda()", ".cpu()", "no CUDA on this machine"),
        ('.to("cuda")', '.to("cpu")', "no CUDA on this machine"),
        ("torch_dtype=torch.bfloat16", "torch_dtype=torch.float32", "bfloat16 convolutions are slow on a CPU"),
        ("--device cuda", "--device cpu", "no CUDA on this machine"),
    ]

#: arguments appended to CLI examples, by command (argparse keeps the last value of an option)
CLI_EXTRA_ARGS: dict[str, list[str]] = {
    "render": ["--height", str(IMAGE_HEIGHT), "--width", str(IMAGE_WIDTH), "--no-progress"],
    "demo": ["--height", str(IMAGE_HEIGHT), "--width", str(IMAGE_WIDTH), "--no-progress"],
    "generate": ["--height", str(GEN_HEIGHT), "--width", str(GEN_WIDTH), "--steps", str(GEN_MAX_STEPS),
                 "--frames", str(GEN_MAX_FRAMES), "--no-progress"],
    "multi-view": ["--height", str(GEN_HEIGHT), "--width", str(GEN_WIDTH), "--steps", str(GEN_MAX_STEPS),
                   "--frames", str(GEN_MAX_FRAMES), "--no-progress"],
    "reconstruct": ["--field-iterations", "20"],
    "batch": ["--no-progress"],
}
#: commands that read IMAGE get the image's exact depth unless the example gives a depth source
COMMANDS_WITH_IMAGE_DEPTH = ("render", "generate", "multi-view")
#: example images written into the working folder, all views of the procedural room
IMAGES = ("scene.jpg", "room.jpg")
#: the example jobs file of docs/cli.md (``worldstereo batch``), written into the working folder
JOBS = [
    {"image": "scene.jpg", "trajectory": "orbit", "prompt": "a quiet street", "seed": 0, "output": "street_orbit"},
    {"image": "scene.jpg", "trajectory": "forward", "preset_args": {"distance": 0.5}, "seed": 1,
     "output": "street_forward"},
    {"image": "room.jpg", "trajectory": "pan_left", "prompt": "a sunlit living room", "seed": 2, "output": "room"},
]


@dataclass
class Block:
    """One fenced block of a document."""

    document: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given by a skip mark, else None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file with their language and skip mark."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group("lang").lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = SKIP_MARK.search(lines[k]) if k >= 0 else None
        blocks.append(Block(path, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                            mark.group("reason").strip() if mark else None))
        i = j + 1
    return blocks


def cli_commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``&&`` split."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _substitute(text: str, checkpoint: Path) -> str:
    for old, new, _ in TEXT_SUBSTITUTIONS:
        text = text.replace(old, new.format(checkpoint=checkpoint))
    return text


# ----------------------------------------------------------------------------------- stand-ins
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """The tiny checkpoint folder, the tiny depth model and the room images with their depth."""
    from worldstereo.camera import intrinsics_from_fov
    from worldstereo.scenes import make_room_scene
    from worldstereo.testing import save_tiny_depth_model, save_tiny_model

    from worldstereo.camera import CameraTrajectory
    from worldstereo.commands.render import write_render_inputs

    root = tmp_path_factory.mktemp("docs-stand-ins")
    checkpoint = root / "WorldStereo"
    for variant in ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd"):
        save_tiny_model(checkpoint / variant, variant)
    depth_model = save_tiny_depth_model(root / "depth-model")
    K = intrinsics_from_fov(IMAGE_HEIGHT, IMAGE_WIDTH, 70.0)
    image, depth = make_room_scene(seed=0).render(torch.eye(4), K, IMAGE_HEIGHT, IMAGE_WIDTH)
    # a render of the room as `worldstereo render` writes it (image.png, render.mp4, render_mask.mp4)
    orbit = CameraTrajectory.orbit(azimuth_deg=20, num_frames=21, height=IMAGE_HEIGHT, width=IMAGE_WIDTH,
                                   fov_deg=70.0).in_scene_units(float(depth.median()))
    render = write_render_inputs(root / "render", image, depth, orbit, point_radius=0.02, progress=False)
    return {"checkpoint": checkpoint, "depth_model": depth_model, "image": image, "depth": depth,
            "render_files": [render.files[k] for k in ("image", "render", "render_mask")]}


def _fewer_frames(trajectory):
    from worldstereo.camera import CameraTrajectory, trajectory_subsample_linspace

    if isinstance(trajectory, CameraTrajectory) and len(trajectory) > GEN_MAX_FRAMES:
        return trajectory[trajectory_subsample_linspace(len(trajectory), GEN_MAX_FRAMES)]
    return trajectory


def _small_generation(function):
    """``function`` at the test size: height/width forced, steps capped, trajectories subsampled to
    at most :data:`GEN_MAX_FRAMES` frames (the argument at position 2 or ``camera_trajectory`` /
    ``trajectories``)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        kwargs["height"], kwargs["width"] = GEN_HEIGHT, GEN_WIDTH
        kwargs["num_inference_steps"] = min(int(kwargs.get("num_inference_steps", GEN_MAX_STEPS)), GEN_MAX_STEPS)
        args = list(args)
        trajectory = args[2] if len(args) > 2 else kwargs.get("camera_trajectory")
        for key in ("render_video", "render_mask"):  # a given render follows the subsampled frames
            given = kwargs.get(key)
            if isinstance(given, torch.Tensor) and hasattr(trajectory, "w2c") and len(given) == len(trajectory) \
                    and len(given) > GEN_MAX_FRAMES:
                from worldstereo.camera import trajectory_subsample_linspace

                kwargs[key] = given[trajectory_subsample_linspace(len(given), GEN_MAX_FRAMES)]
        if len(args) > 2:
            args[2] = [_fewer_frames(t) for t in args[2]] if isinstance(args[2], list) else _fewer_frames(args[2])
        for key in ("camera_trajectory", "trajectories"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = [_fewer_frames(t) for t in value] if isinstance(value, list) else _fewer_frames(value)
        if "num_frames" in kwargs:
            kwargs["num_frames"] = min(int(kwargs["num_frames"]), GEN_MAX_FRAMES)
        return function(*args, **kwargs)

    return wrapper


def _small_batch(function):
    """``run_batch`` with the test size as the defaults of its jobs (:data:`GEN_HEIGHT`, ...)."""

    @functools.wraps(function)
    def wrapper(*args, defaults=None, **kwargs):
        defaults = dict(defaults or {})
        defaults.update(height=GEN_HEIGHT, width=GEN_WIDTH, steps=min(int(defaults.get("steps", GEN_MAX_STEPS)),
                                                                      GEN_MAX_STEPS),
                        frames=min(int(defaults.get("frames", GEN_MAX_FRAMES)), GEN_MAX_FRAMES))
        return function(*args, defaults=defaults, **kwargs)

    return wrapper


def _stand_ins(monkeypatch, stand_ins, workdir: Path) -> None:
    """Install every stand-in: example images, small generation, the tiny default depth model."""
    from worldstereo.depth import DEFAULT_DEPTH_MODEL, transformers_backend

    for name in IMAGES:
        save_image(workdir / name, stand_ins["image"])
    np.save(workdir / "room_depth.npy", stand_ins["depth"].numpy())
    (workdir / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in JOBS), encoding="utf-8")
    for path in stand_ins["render_files"]:
        shutil.copy(path, workdir / path.name)
    if EXAMPLES.is_dir():
        (workdir / "examples").symlink_to(EXAMPLES, target_is_directory=True)
    monkeypatch.chdir(workdir)
    # every module that holds the generation functions (imported first, so that none binds the
    # wrapper for good); monkeypatch restores them all afterwards
    from worldstereo.cli import COMMAND_MODULES

    for module in (*COMMAND_MODULES, "inputs_folder"):
        importlib.import_module(f"worldstereo.commands.{module}")
    for name in ("generate_video", "generate_multi_view", "reconstruct_3d"):
        original = getattr(worldstereo.pipeline, name)
        small = _small_generation(original)
        monkeypatch.setattr(worldstereo, name, small, raising=False)
        for module in [m for key, m in sys.modules.items() if key.startswith("worldstereo") and m is not None]:
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, small)
    from worldstereo import batch

    monkeypatch.setattr(batch, "run_batch", _small_batch(batch.run_batch))
    load = transformers_backend._load

    def load_stand_in(model, local_files_only):
        return load(str(stand_ins["depth_model"]) if model == DEFAULT_DEPTH_MODEL else model, local_files_only)

    monkeypatch.setattr(transformers_backend, "_load", load_stand_in)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing else may reach for the network


def _run_cli(command: str, stand_ins, where: str) -> bool:
    """Run one CLI example; False when it needs the reference examples and they are absent."""
    argv = shlex.split(_substitute(command, stand_ins["checkpoint"]))
    if argv[0].endswith("worldstereo"):
        argv = argv[1:]
    if any(a.startswith("examples/") for a in argv) and not EXAMPLES.is_dir():
        return False
    name = next((a for a in argv if not a.startswith("-")), None)
    extra = list(CLI_EXTRA_ARGS.get(name, []))
    if name in COMMANDS_WITH_IMAGE_DEPTH and not {"--depth", "--depth-model", "--inputs"} & set(argv):
        extra += ["--depth", "room_depth.npy"]
    code = main(["-q", "--threads", "1", *argv, *extra])
    assert code == 0, f"{where}: `{command}` exited with {code}"
    return True


def _run_python(block: Block, namespace: dict, stand_ins) -> None:
    code = _substitute(block.code, stand_ins["checkpoint"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exec(compile(code, block.where, "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - name the block that failed
            raise AssertionError(f"{block.where}: the Python example fails: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------- tests
def test_documents_have_examples_and_skips_are_rare():
    blocks = [b for d in DOCUMENTS for b in extract_blocks(d)]
    runnable = [b for b in blocks if b.lang in ("python", "bash")]
    assert len([b for b in runnable if b.lang == "python"]) >= 8
    assert len([b for b in runnable if b.lang == "bash"]) >= 5
    skipped = [b for b in runnable if b.skip]
    assert len(skipped) <= len(runnable) // 5, [b.where for b in skipped]  # at most one block in five
    for d in DOCUMENTS:  # a mark must sit right before a fence
        text = d.read_text(encoding="utf-8")
        marks = len(SKIP_MARK.findall(text))
        assert marks == len([b for b in extract_blocks(d) if b.skip]), f"{d.name}: a skip mark not before a block"
    assert "<!-- docs-test: skip" not in "".join(b.code for b in blocks)


def test_cli_command_extraction():
    code = "worldstereo demo --out d && worldstereo reconstruct d \\\n    --out r   # 3D\n# a comment\n"
    assert cli_commands(code) == ["worldstereo demo --out d", "worldstereo reconstruct d --out r"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(REPO)) for d in DOCUMENTS])
def test_document_examples_run(document, stand_ins, tmp_path, monkeypatch):
    _stand_ins(monkeypatch, stand_ins, tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in extract_blocks(document):
        if block.skip or block.lang not in ("python", "bash"):
            continue
        if block.lang == "python":
            _run_python(block, namespace, stand_ins)
            ran += 1
            continue
        for command in cli_commands(block.code):
            first = shlex.split(command)[0]
            assert first in ("worldstereo", ".venv/bin/worldstereo"), (
                f"{block.where}: `{command}` is not a worldstereo command; mark the block "
                "<!-- docs-test: skip (reason) --> if it cannot run in the tests")
            ran += int(_run_cli(command, stand_ins, block.where))
    if document.name in ("README.md", "usage.md", "cameras.md", "cli.md"):
        assert ran > 0, f"{document.name}: no example ran"


@pytest.mark.parametrize("command", ["render", "demo", "generate", "multi-view", "reconstruct", "batch", "app"])
def test_help_is_plain_text(command, capsys):
    """`--help` is read in a terminal: no reStructuredText markup from docstrings."""
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text and ":class:" not in text and ":meth:" not in text
