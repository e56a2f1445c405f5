"""``worldstereo generate``: one video from one image along a camera trajectory.

Writes into ``--out``:

* ``video.mp4`` — the generated video (H.264, ``--fps``), frame 0 = the condition view;
* ``render.mp4`` / ``render_mask.mp4`` — the ControlNet inputs that were used: the geometric memory
  rendered along the trajectory (holes mid-grey, frame 0 = the condition image) and its hole mask
  (white = hole);
* ``depths.npz`` — the z-depth of every render frame (``depth`` (T, H, W), 0 where there is none;
  ``hole_mask`` (T, H, W) bool), which ``worldstereo reconstruct`` reads from this folder;
* ``camera.json`` — the trajectory in the reference format, intrinsics in pixels of the generated
  size (``width``/``height`` keys);
* ``image.png`` — the condition image at the generated size;
* ``memory_bank/`` — the spatial memory after the update (``images/*.png`` + ``cameras.json``
  WorldMirror layout, see :meth:`~worldstereo.memory.SpatialStereoMemory.export_worldmirror`),
  memory variants only;
* ``points.ply`` — the geometric memory (global point cloud) after the update;
* ``summary.json`` — :meth:`~worldstereo.pipeline.GenerationRecord.summary` (variant, steps,
  transformer calls, guidance, seed, references, per-frame render ``coverage``, ``median_depth``,
  timings) plus the model, the inputs and the ``--fit-trajectory`` scale.

The helpers here (:func:`add_generation_options`, :func:`prepare_generation`,
:func:`write_video_outputs`, ...) are shared with ``worldstereo multi-view``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldstereo import __version__
from worldstereo.commands import (
    UsageError,
    add_fit_option,
    bounded_float,
    bounded_int,
    final_path,
    output_path,
    parse_key_values,
    positive_float,
)
from worldstereo.commands.parallel_options import add_parallel_options, apply_parallel, parallel_device, wants_parallel
from worldstereo.commands.render import (
    MAX_FOV,
    MAX_FPS,
    MAX_FRAMES,
    MAX_SIDE,
    check_depth_model_spec,
    check_trajectory_spec,
    fit_to_cloud,
    lift_condition_view,
    resolve_trajectory,
    working_size,
    write_depths,
)

__all__ = [
    "register",
    "run",
    "VARIANTS",
    "DTYPES",
    "REFERENCE_STEPS",
    "REFERENCE_GUIDANCE",
    "GenerationSetup",
    "StepProgress",
    "add_generation_options",
    "prepare_generation",
    "write_video_outputs",
    "write_memory_outputs",
    "write_summary",
    "common_summary",
    "run_one",
    "generate_one",
    "load_model",
    "resolve_run_device",
    "memory_tier_of",
    "sampling_settings",
    "CachedDepth",
    "depth_scale_and_intrinsics",
]

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    from torch import Tensor

logger = logging.getLogger(__name__)

#: model types accepted by ``--variant`` (= :data:`worldstereo.models.config.MODEL_TYPES`, kept
#: literal here so that ``--help`` does not import the model code)
VARIANTS: tuple[str, ...] = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")
#: ``--dtype`` choices
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
#: denoising steps / CFG scale of the reference inference script (UniPC variants)
REFERENCE_STEPS = 40
REFERENCE_GUIDANCE = 5.0
#: ``generate_video``'s defaults, passed to the distilled variant (which ignores them) so that it
#: does not warn about overridden values the user never gave
_API_STEPS = 50
_API_GUIDANCE = 7.5

#: most denoising steps / largest guidance scale accepted
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")


# ------------------------------------------------------------------------------------ options
def _non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_GUIDANCE):
        raise argparse.ArgumentTypeError(f"expected a number in [0, {MAX_GUIDANCE:g}], got {text!r}")
    return value


def _seed(text: str) -> int:
    """argparse type: an integer seed in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text!r}")
    return value


def add_generation_options(parser: argparse.ArgumentParser, *, image_optional: bool = False) -> None:
    """Options shared by ``generate`` and ``multi-view`` (everything but ``--trajectory``);
    ``image_optional``: IMAGE may be left out (``generate --inputs``)."""
    parser.add_argument("image", type=Path, nargs="?" if image_optional else None,
                        help="condition image (any format PIL reads); frame 0 of every video")
    parser.add_argument("--model", required=True, metavar="PATH|ID",
                        help="WorldStereo checkpoint: reference root or variant folder, a save_pretrained folder, "
                             "or a Hugging Face id")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="model type to load from a reference root (default: worldstereo-memory); checked "
                             "against the folder otherwise")
    parser.add_argument("--out", required=True, type=output_path, help="output folder (created if needed)")
    parser.add_argument("--frames", type=bounded_int(2, MAX_FRAMES), default=None,
                        help="frames per video (default: 16 for presets, the file's length for files; the "
                             "reference uses 21 keyframes)")
    parser.add_argument("--height", type=bounded_int(16, MAX_SIDE), default=None,
                        help="generated height, multiple of 16 (default: the reference size closest to IMAGE's "
                             "aspect)")
    parser.add_argument("--width", type=bounded_int(16, MAX_SIDE), default=None,
                        help="generated width, multiple of 16")
    parser.add_argument("--steps", type=bounded_int(1, MAX_STEPS), default=None,
                        help=f"denoising steps (default {REFERENCE_STEPS}, as the reference; the distilled "
                             "variant always uses its fixed few-step schedule)")
    parser.add_argument("--guidance", type=_non_negative_float, default=None,
                        help=f"classifier-free guidance scale, <= 1 disables it (default {REFERENCE_GUIDANCE}; "
                             "ignored by the distilled variant)")
    parser.add_argument("--prompt", default="", help="text prompt (default: empty, as the reference)")
    parser.add_argument("--negative-prompt", default=None,
                        help="negative prompt for guidance (default: the model config's)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--depth", type=Path, default=None,
                     help="depth map of IMAGE (.npy/.npz float z-depth, or 16-bit .png) at IMAGE's size, used as "
                          "given (the point cloud then only grows if the model carries a depth estimator)")
    src.add_argument("--depth-model", default=None,
                     help="transformers depth model id or local folder, or 'moge' (default: the model's own "
                          "depth estimator, else depth-anything/Depth-Anything-V2-Small-hf)")
    parser.add_argument("--depth-scale", type=positive_float, default=None,
                        help="multiplier from stored --depth values to scene units (default 1 for .npy, 1/1000 "
                             "for .png)")
    parser.add_argument("--fov", type=bounded_float(0.0, MAX_FOV), default=None,
                        help="horizontal field of view in degrees when a trajectory has no intrinsics (default: "
                             "the depth model's estimate if it predicts one, else 60)")
    parser.add_argument("--preset-arg", action="append", metavar="KEY=VALUE", default=None,
                        help="preset parameter applied to every preset trajectory, repeatable, e.g. "
                             "--preset-arg distance=0.5")
    parser.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="transformer/VAE dtype (default: bfloat16 on CUDA, float32 on CPU; half precision "
                             "on CPU falls back to float32 with a warning)")
    mem = parser.add_mutually_exclusive_group()
    mem.add_argument("--memory-tier", default=None, metavar="NAME",
                     help="place the model by memory tier (see docs/performance.md): resident, model_offload, "
                          "group_offload (24 GB cards), group_offload_leaf, group_offload_disk, fp8, int8, float8, "
                          "fp8_model_offload, int8_model_offload, fp8_group_offload, fp8_group_offload_leaf "
                          "(default: everything on --device)")
    mem.add_argument("--vram", type=positive_float, default=None, metavar="GB",
                     help="pick the fastest memory tier whose expected peak fits GB of accelerator memory")
    parser.add_argument("--fps", type=bounded_int(1, MAX_FPS), default=16,
                        help="frame rate of the written videos (default 16)")
    add_fit_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_parallel_options(parser)


# ---------------------------------------------------------------------------------- preparation
@dataclass
class GenerationSetup:
    """Everything resolved from the command line before generation.

    Attributes:
        model: the loaded :class:`~worldstereo.WorldStereo`.
        image: condition image (3,Hi,Wi) in [0,1] at its original size (generation resizes it).
        height, width: generated size in pixels.
        trajectories: one :class:`~worldstereo.camera.CameraTrajectory` per ``--trajectory`` spec,
            w2c OpenCV with K in pixels of ``(height, width)``.
        depth_estimator: the depth source handed to ``generate_video``.
        depth_source: its description for ``summary.json``.
        steps, guidance: values passed to ``generate_video``.
        device, dtype: where the model runs.
        timings: seconds spent in ``load_model`` and ``depth``.
        median_depth: the condition view's median depth (scene units; presets are scaled by it).
        fit_scales: per trajectory, the factor ``--fit-trajectory`` applied to its motion (1.0 = none).
    """

    model: Any
    image: Tensor
    height: int
    width: int
    trajectories: list[Any]
    depth_estimator: Any
    depth_source: str
    steps: int
    guidance: float
    device: str
    dtype: str
    timings: dict[str, float] = field(default_factory=dict)
    median_depth: float = 1.0
    fit_scales: list[float] = field(default_factory=list)
    memory_tier: str | None = None

    def generation_kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        """Keyword arguments of :func:`~worldstereo.pipeline.generate_video` common to every video."""
        return {
            "height": self.height, "width": self.width, "num_inference_steps": self.steps,
            "guidance_scale": self.guidance, "seed": int(args.seed), "prompt": args.prompt,
            "negative_prompt": args.negative_prompt, "depth_estimator": self.depth_estimator,
            "use_geometric_memory": True, "use_spatial_memory": True, "output_format": "tensor",
        }


class StepProgress:
    """``progress_callback(step, total_steps, latent)`` that drives a tqdm bar (created on the first step)."""

    def __init__(self, desc: str, *, disable: bool = False) -> None:
        self.desc = desc
        self.disable = disable
        self._bar: Any = None
        self.last_step = 0
        self.total = 0

    def __call__(self, step: int, total: int, latent: Any) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="step", leave=False,
                             disable=True if self.disable else None)
        self._bar.update(step - self.last_step)
        self.last_step, self.total = step, total

    def close(self) -> None:
        """Close the bar (safe to call when no step ran)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CachedDepth:
    """Depth estimator that answers the condition image from an already computed prediction and
    delegates every other image (generated frames for the memory update) to ``estimator``."""

    def __init__(self, estimator: Any, image: Tensor, prediction: Any) -> None:
        self.estimator = estimator
        self.image = image
        self.prediction = prediction

    def __call__(self, image: Tensor) -> Any:
        import torch

        if image.shape == self.image.shape and torch.equal(image.cpu(), self.image):
            return self.prediction
        return self.estimator(image)


def depth_scale_and_intrinsics(prediction: Any, height: int, width: int) -> tuple[float, Tensor | None]:
    """``(median depth, K)`` of a condition image's :class:`~worldstereo.depth.DepthPrediction`: the
    median of its valid depth (1.0 when none; it scales the presets) and its predicted intrinsics
    rescaled to ``(height, width)`` (None when it predicts none)."""
    from worldstereo.io.image import rescale_intrinsics

    valid = prediction.valid_mask & (prediction.depth > 0)
    median = float(prediction.depth[valid].median()) if bool(valid.any()) else 1.0
    K = None
    if prediction.K is not None:
        size = (int(prediction.depth.shape[-2]), int(prediction.depth.shape[-1]))
        K = rescale_intrinsics(prediction.K.double().cpu(), size, (height, width))
    return median, K


def _check_trajectory_spec(spec: str) -> None:
    from worldstereo.camera import PRESET_NAMES

    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"--trajectory: {spec!r} is a directory, expected a trajectory file or preset name")
        return
    if spec not in PRESET_NAMES:
        raise UsageError(f"--trajectory: {spec!r} is neither an existing file nor a preset; presets: "
                         f"{', '.join(PRESET_NAMES)}")


def _check_model_spec(spec: str, variant: str | None = None) -> None:
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--model: {spec!r} is a file, expected a checkpoint folder or a Hugging Face id")
        from worldstereo.models.loading import resolve_checkpoint

        try:  # the layout, the configs and --variant, from the JSON files only (no weight is read)
            resolve_checkpoint(path, variant, local_files_only=True)
        except (ValueError, OSError) as exc:
            text = " ".join(str(exc).split())
            option = "--variant" if text.startswith("variant:") else "--model"
            what = "--model " if option == "--variant" else ""
            raise UsageError(f"{option}: cannot use {what}{spec!r}: {text}") from None
        return
    if not _HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise UsageError(f"--model: {spec!r} is neither an existing folder nor a Hugging Face id (owner/name)")


def _resolve_device(spec: str | None, dtype_name: str | None) -> tuple[str, str]:
    """``(device, dtype name)``; refuses CUDA where there is none; half precision on CPU -> float32."""
    import torch

    if spec is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        from worldstereo.devices import check_device

        device = str(check_device(spec, "--device"))  # a typo, "meta", CUDA/MPS where there is none: exit 2
    kind = torch.device(device).type
    dtype = dtype_name or ("bfloat16" if kind == "cuda" else "float32")
    if kind == "cpu" and dtype != "float32":
        logger.warning("--dtype %s: half precision is slow or unsupported on the CPU; using float32", dtype)
        dtype = "float32"
    return device, dtype


def resolve_run_device(args: argparse.Namespace) -> tuple[str, str]:
    """``(device, dtype name)`` of the command: ``--device`` / ``--dtype``, or under ``--parallel`` /
    ``--fsdp`` this torchrun rank's device (the process group is initialised here); ``--memory-tier`` /
    ``--vram`` are checked against it."""
    spec = parallel_device(args) if wants_parallel(args) else args.device
    device, dtype = _resolve_device(spec, args.dtype)
    _check_memory_options(args, device)  # --memory-tier / --vram need only the device
    return device, dtype


def _load_user_depth(args: argparse.Namespace, image_size: tuple[int, int]) -> Any:
    """The ``--depth`` map as a :class:`~worldstereo.depth.UserDepth` of IMAGE's size."""
    from worldstereo.depth import UserDepth, load_depth

    depth = load_depth(args.depth, args.depth_scale, name="--depth")
    if tuple(depth.shape) != image_size:
        raise UsageError(f"--depth: size {tuple(depth.shape)} does not match IMAGE's (height, width) {image_size}")
    if not bool((depth > 0).any()):
        raise UsageError(f"--depth: {str(args.depth)!r} has no valid (positive) depth")
    return UserDepth(depth)


def _check_memory_options(args: argparse.Namespace, device: str) -> None:
    """``--memory-tier`` / ``--vram`` checks that need no model (fast, before loading)."""
    from worldstereo.vram import MEMORY_TIERS, get_memory_tier, suggest_memory_tier

    if getattr(args, "memory_tier", None) is None and getattr(args, "vram", None) is None:
        return

    if args.memory_tier is not None:
        if args.memory_tier not in MEMORY_TIERS:
            raise UsageError(f"--memory-tier: expected one of {', '.join(MEMORY_TIERS)}, got {args.memory_tier!r}")
        if get_memory_tier(args.memory_tier).needs_accelerator and device == "cpu":
            raise UsageError(f"--memory-tier {args.memory_tier}: needs an accelerator (--device cuda); on the CPU "
                             f"use resident, fp8, int8 or float8")
    if args.vram is not None:
        if device == "cpu":
            raise UsageError("--vram: sizes the placement of an accelerator; not with --device cpu")
        try:  # release sizes; refined with the loaded model's own sizes after loading
            suggest_memory_tier(args.vram, args.variant or "worldstereo-memory")
        except ValueError as exc:
            raise UsageError(f"--vram: {exc}") from None


def _apply_memory_tier(args: argparse.Namespace, model: Any, device: str) -> str:
    """Apply ``--memory-tier`` (or the tier ``--vram`` suggests for the loaded model); returns its name."""
    from worldstereo.optimization import enable_memory_tier, suggest_memory_tier
    from worldstereo.vram import parameter_counts_of

    tier = args.memory_tier
    if tier is None:
        try:
            tier = suggest_memory_tier(args.vram, model.variant, counts=parameter_counts_of(model))
        except ValueError as exc:
            raise UsageError(f"--vram: {exc}") from None
        logger.info("--vram %s GB: memory tier %s", args.vram, tier)
    enable_memory_tier(model, tier, device=device)
    return tier


def prepare_generation(args: argparse.Namespace, specs: list[str]) -> GenerationSetup:
    """Validate the command line, load the model, estimate depth and resolve the trajectories.

    Every check that needs neither the model nor the depth (image, sizes, trajectory names, depth
    file, device, model path) runs first, so bad input fails in well under a second.

    Raises:
        UsageError / FileNotFoundError / ValueError: bad input, naming the option.
    """
    from worldstereo.io.image import load_image

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out: {str(args.out)!r} exists and is not a folder")
    image = load_image(args.image, name="IMAGE")
    image_size = (int(image.shape[1]), int(image.shape[2]))
    height, width = working_size(args, image_size)
    preset_args = parse_key_values(args.preset_arg, "--preset-arg")
    for spec in specs:
        _check_trajectory_spec(spec)
    if preset_args and all(Path(s).exists() for s in specs):
        raise UsageError("--preset-arg: only applies to preset trajectories, not to files")
    for spec in specs:  # unknown preset keywords, broken files, too long videos fail now, not after loading
        n = check_trajectory_spec(spec, args.frames, height, width, image_size,
                                  None if Path(spec).exists() else preset_args)
        if n < 2:
            raise UsageError(f"--trajectory: {spec!r} has a single pose; a video needs at least 2 frames (--frames N "
                             f"repeats it)")
    if args.depth_scale is not None and args.depth is None:
        raise UsageError("--depth-scale: only applies with --depth")
    user_depth = _load_user_depth(args, image_size) if args.depth is not None else None
    check_depth_model_spec(args.depth_model)
    device, dtype_name = resolve_run_device(args)  # option-local checks first, then the model's files
    _check_model_spec(args.model, args.variant)

    # -- model -------------------------------------------------------------------------------
    timings: dict[str, float] = {}
    model, timings["load_model"] = load_model(args, device, dtype_name)
    steps, guidance = sampling_settings(args, model)

    # -- depth of the condition image (scales the presets, may give K) ----------------------
    t1 = time.perf_counter()
    if user_depth is not None:
        estimator, source = user_depth, f"file:{args.depth}"
        pred = user_depth(image)
    else:
        from worldstereo.depth import DEFAULT_DEPTH_MODEL, get_depth_estimator

        spec = args.depth_model or getattr(model, "depth_estimator", None) or DEFAULT_DEPTH_MODEL
        source = spec if isinstance(spec, str) else type(spec).__name__
        logger.info("estimating depth with %s", source)
        base = get_depth_estimator(spec, device=device)
        pred = base(image)
        estimator = CachedDepth(base, image, pred)
    timings["depth"] = time.perf_counter() - t1
    median, K = depth_scale_and_intrinsics(pred, height, width)
    trajectories = [
        resolve_trajectory(spec, num_frames=args.frames, height=height, width=width, fov_deg=args.fov,
                           image_size=image_size, median_depth=median, predicted_K=K,
                           preset_args=preset_args if not Path(spec).exists() else None)
        for spec in specs
    ]
    fit_scales = [1.0] * len(trajectories)
    if args.fit_trajectory is not None:
        trajectories, fit_scales = _fit_trajectories(args, specs, trajectories, image, pred, model)
    return GenerationSetup(model=model, image=image, height=height, width=width, trajectories=trajectories,
                           depth_estimator=estimator, depth_source=source, steps=steps, guidance=guidance,
                           device=device, dtype=dtype_name, timings=timings, memory_tier=memory_tier_of(model),
                           median_depth=median,
                           fit_scales=fit_scales)


def _fit_trajectories(args: argparse.Namespace, specs: list[str], trajectories: list[Any], image: Tensor, pred: Any,
                      model: Any) -> tuple[list[Any], list[float]]:
    """``--fit-trajectory``: every trajectory fitted to the condition view's point cloud, lifted at the
    generated size as the pipeline lifts it, with the model's renderer settings."""
    from worldstereo.io.image import resize_image

    h, w = trajectories[0].height, trajectories[0].width
    depth = resize_image(pred.depth[None].float().cpu(), h, w, mode="nearest")[0]
    valid = resize_image(pred.valid_mask[None].float().cpu(), h, w, mode="nearest")[0] > 0.5
    points = lift_condition_view(resize_image(image, h, w).clamp(0, 1), depth * valid, trajectories[0], valid)
    config = getattr(model, "global_memory_config", {}) or {}
    kw = {k: config[k] for k in ("point_radius", "points_per_pixel") if k in config}
    fitted, scales = [], []
    for spec, trajectory in zip(specs, trajectories):
        t, scale = fit_to_cloud(trajectory, points, args.fit_trajectory, what=f"--trajectory {spec}", **kw)
        fitted.append(t)
        scales.append(scale)
    return fitted, scales


def load_model(args: argparse.Namespace, device: str, dtype_name: str) -> tuple[Any, float]:
    """Load ``--model`` (``--variant``) on ``device`` in ``dtype_name``; returns ``(model, seconds)``.
    ``device`` / ``dtype_name`` come from :func:`resolve_run_device`, which has checked ``--memory-tier`` /
    ``--vram`` against the device.

    Raises:
        UsageError: the checkpoint cannot be loaded (message names ``--model``).
    """
    import torch

    from worldstereo.models.worldstereo import WorldStereo

    t0 = time.perf_counter()
    logger.info("loading %s%s on %s (%s)", args.model, f" [{args.variant}]" if args.variant else "", device,
                dtype_name)
    tiered = getattr(args, "memory_tier", None) is not None or getattr(args, "vram", None) is not None
    parallel = wants_parallel(args)
    try:  # a memory tier or parallelism places the model itself: load on the CPU
        model = WorldStereo.from_pretrained(args.model, args.variant, torch_dtype=getattr(torch, dtype_name),
                                            device=None if tiered or parallel else device)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as exc:
        raise UsageError(f"--model: cannot load {args.model!r}: {exc}") from exc
    if parallel:
        apply_parallel(args, model, device)
    elif tiered:
        _apply_memory_tier(args, model, device)
    return model, time.perf_counter() - t0


def memory_tier_of(model: Any) -> str | None:
    """Name of the memory tier applied to ``model`` (``--memory-tier`` / ``--vram``), else None."""
    handle = getattr(model, "_worldstereo_memory_tier", None)
    return handle.tier.name if handle is not None else None


def sampling_settings(args: argparse.Namespace, model: Any) -> tuple[int, float]:
    """``(steps, guidance)`` for ``generate_video``: the options, else the reference's 40 steps and
    guidance 5 (the distilled variant gets the API defaults, which it ignores without a warning)."""
    if model.is_distilled:
        steps = _API_STEPS if args.steps is None else args.steps
        guidance = _API_GUIDANCE if args.guidance is None else args.guidance
    else:
        steps = REFERENCE_STEPS if args.steps is None else args.steps
        guidance = REFERENCE_GUIDANCE if args.guidance is None else args.guidance
    return int(steps), float(guidance)


# --------------------------------------------------------------------------------------- output
def write_video_outputs(out: Path, suffix: str, frames: Tensor, record: Any, trajectory: Any, *, fps: int,
                        extra_json: dict[str, Any] | None = None) -> dict[str, str]:
    """Write ``video{suffix}.mp4``, ``render{suffix}.mp4``, ``render_mask{suffix}.mp4``,
    ``depths{suffix}.npz`` (the render's depth, see :func:`~worldstereo.commands.render.write_depths`)
    and ``camera{suffix}.json`` (each atomically) and return their names by kind.

    Args:
        out: existing output folder.
        suffix: ``""`` or ``"_00"``, ``"_01"``, ...
        frames: generated video (F,3,H,W) in [0,1].
        record: the video's :class:`~worldstereo.pipeline.GenerationRecord` (render inputs).
        trajectory: its trajectory, K in pixels of (H, W).
    """
    from worldstereo.io.video import write_video


    files = {
        "video": f"video{suffix}.mp4",
        "render": f"render{suffix}.mp4",
        "render_mask": f"render_mask{suffix}.mp4",
        "camera": f"camera{suffix}.json",
    }
    write_video(out / files["video"], frames, fps=fps)
    if record.render_video is not None:
        write_video(out / files["render"], record.render_video.clamp(0, 1), fps=fps)
    if record.render_mask is not None:
        write_video(out / files["render_mask"], record.render_mask.clamp(0, 1).expand(-1, 3, -1, -1), fps=fps)
    if record.render_depth is not None and record.render_mask is not None:
        files["depths"] = f"depths{suffix}.npz"
        write_depths(out / files["depths"], record.render_depth, record.render_mask)
    trajectory.to_reference_json(out / files["camera"], extra=extra_json)
    return files


def write_memory_outputs(out: Path, memory: Any) -> dict[str, Any]:
    """Write ``points.ply`` (geometric memory) and ``memory_bank/`` (spatial memory, when there is
    one); return the written names plus ``num_points`` / ``memory_bank_size``."""
    info: dict[str, Any] = {"num_points": 0, "memory_bank_size": 0}
    if memory.geometric is not None and not memory.geometric.is_empty:
        memory.geometric.points.save_ply(out / "points.ply")
        info["points"] = "points.ply"
        info["num_points"] = len(memory.geometric.points)
    elif memory.geometric is not None:
        logger.warning("geometric memory is empty: no points.ply written")
    if memory.spatial is not None and len(memory.spatial) > 0:
        memory.spatial.export_worldmirror(out / "memory_bank")
        info["memory_bank"] = "memory_bank"
        info["memory_bank_size"] = len(memory.spatial)
    return info


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically (indented, UTF-8)."""
    from worldstereo.io.atomic import atomic_open

    path = out / "summary.json"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    return path


def common_summary(args: argparse.Namespace, setup: GenerationSetup) -> dict[str, Any]:
    """The model / input part of ``summary.json``."""
    from worldstereo.parallel import parallel_state

    state = parallel_state(setup.model)
    return {
        "worldstereo_version": __version__,
        "model": str(args.model),
        "variant": setup.model.variant,
        "device": setup.device,
        "dtype": setup.dtype,
        "memory_tier": setup.memory_tier,
        "parallel": state.summary() if state is not None else None,
        "image": str(args.image),
        "image_size": [int(setup.image.shape[1]), int(setup.image.shape[2])],
        "height": setup.height,
        "width": setup.width,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "depth": setup.depth_source,
        "median_depth": setup.median_depth,
        "fit_trajectory": args.fit_trajectory,
        "fov": args.fov,
        "fps": args.fps,
    }


def run_one(setup: GenerationSetup, args: argparse.Namespace, trajectory: Any, memory: Any, desc: str) -> Tensor:
    """Generate one video into ``memory`` with a step progress bar; returns (F,3,H,W) in [0,1]."""
    from worldstereo.pipeline import generate_video

    bar = StepProgress(desc, disable=args.no_progress)
    try:
        frames = generate_video(setup.model, setup.image, trajectory, num_frames=len(trajectory),
                                progress_callback=bar, memory=memory, **setup.generation_kwargs(args))
    finally:
        bar.close()
    return frames


# ------------------------------------------------------------------------------------------ CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``generate`` sub-command."""
    p = subparsers.add_parser(
        "generate",
        help="generate a camera-controlled video from IMAGE along a trajectory, or run a reference inputs folder",
        description=(
            "Generate a video from IMAGE along a camera trajectory with a WorldStereo model. Writes video.mp4, "
            "render.mp4 + render_mask.mp4 (the ControlNet inputs, mask white = hole), depths.npz (the render's "
            "depth), camera.json (reference format at the generated size), image.png, memory_bank/ (memory "
            "variants), points.ply and summary.json (with the per-frame render coverage) into --out. With --inputs "
            "FOLDER (instead of IMAGE and --trajectory) it runs a folder "
            "in the reference implementation's example layout as the reference scripts would: images/<scene> "
            "(one trajectory rendered from the image's depth), reconstruction/<scene> and panorama/<scene> "
            "(the folder's own render.mp4 / render_mask.mp4 per trajectory with one shared frame bank; video_NN.mp4 "
            "etc., see docs/cli.md)."
        ),
    )
    p.add_argument("--trajectory", default=None,
                   help="preset name (forward, backward, left, right, up, down, pan_left, pan_right, tilt_up, "
                        "tilt_down, roll, zoom_in, zoom_out, dolly_zoom, orbit, spiral, eloop) or a trajectory "
                        "file (.json: ours / reference camera.json / transforms.json; .npz; RealEstate10K .txt); "
                        "required unless --inputs")
    p.add_argument("--inputs", type=Path, default=None, metavar="FOLDER",
                   help="a folder in the reference example layout (images/<scene>, reconstruction/<scene> or "
                        "panorama/<scene>): image, prompt, cameras and, for the multi-trajectory kinds, the "
                        "pre-rendered render.mp4 / render_mask.mp4 come from it; replaces IMAGE and --trajectory. "
                        "Generation size and keyframe count default to the model's scale_map and nframe")
    add_generation_options(p, image_optional=True)
    p.set_defaults(func=run, input_folder_args=("inputs",))
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo generate``; returns the exit status."""
    if args.inputs is not None:
        from worldstereo.commands.inputs_folder import run_inputs_folder

        if args.image is not None or args.trajectory is not None:
            raise UsageError("--inputs: replaces IMAGE and --trajectory (the folder has the image and cameras); "
                             "give one or the other")
        return run_inputs_folder(args)
    if args.image is None or args.trajectory is None:
        raise UsageError("IMAGE and --trajectory are required (or --inputs FOLDER)")
    return generate_one(args)


def generate_one(args: argparse.Namespace, inputs_note: dict[str, Any] | None = None) -> int:
    """One video from ``args.image`` along ``args.trajectory`` into ``args.out`` (the body of
    ``worldstereo generate``); ``inputs_note`` is added to ``summary.json`` as ``"inputs"``."""
    from worldstereo.io.image import resize_image, save_image
    from worldstereo.parallel import is_writer
    from worldstereo.pipeline import SceneMemory

    t0 = time.perf_counter()
    setup = prepare_generation(args, [args.trajectory])
    trajectory = setup.trajectories[0]
    memory = SceneMemory()
    logger.info("generating %d frames at %dx%d (%s, %d steps, guidance %.2f, seed %d)", len(trajectory),
                setup.height, setup.width, setup.model.variant, setup.steps, setup.guidance, args.seed)
    frames = run_one(setup, args, trajectory, memory, "denoise")
    if not is_writer(setup.model):  # under --parallel every rank has the video; rank 0 writes it
        return 0
    record = memory.history[-1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    files = write_video_outputs(out, "", frames, record, trajectory, fps=args.fps,
                                extra_json={"trajectory": args.trajectory})
    save_image(out / "image.png", resize_image(setup.image, setup.height, setup.width).clamp(0, 1))
    files["image"] = "image.png"
    mem_info = write_memory_outputs(out, memory)
    summary = common_summary(args, setup)
    summary.update(record.summary())
    summary.update({
        "trajectory": args.trajectory,
        "fit_scale": setup.fit_scales[0],
        "num_frames": len(trajectory),
        "num_points": mem_info["num_points"],
        "memory_bank_size": mem_info["memory_bank_size"],
    })
    files.update({k: v for k, v in mem_info.items() if k in ("points", "memory_bank")})
    summary["files"] = dict(sorted(files.items()))
    if inputs_note is not None:
        summary["inputs"] = inputs_note
    summary["timings"] = {**setup.timings, **record.timings, "write": time.perf_counter() - t1,
                          "total": time.perf_counter() - t0}
    write_summary(out, summary)
    logger.info("wrote %s (%d frames, %d transformer calls, %.1f s)", final_path(args, out), len(trajectory),
                record.transformer_calls, summary["timings"]["total"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("use the `worldstereo generate` command")
