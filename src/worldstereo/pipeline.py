"""The generation API of the interface document: :func:`generate_video`, :func:`generate_multi_view`,
:func:`reconstruct_3d` and :class:`WorldStereoPipeline`.

Data flow of one video (reference-implementation.md §4): condition image -> depth -> global point
cloud (:class:`~worldstereo.memory.GlobalGeometricMemory`) rendered along the trajectory (render
video + hole mask, frame 0 = the condition image) -> keyframe VAE latents; Plücker rays of the
trajectory; for the memory variants, reference views retrieved from the
:class:`~worldstereo.memory.SpatialStereoMemory` by frustum overlap; text / CLIP / first-frame
latent conditioning -> sampler (UniPC + classifier-free guidance, or the few-step DMD schedule) ->
keyframe VAE decode -> frames -> memory update.

Conventions: cameras are world-to-camera OpenCV 4x4 with pixel intrinsics; frame 0 of every
trajectory is the condition view; images in [0, 1]; hole masks 1 = hole.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import optimization
from .camera import CameraTrajectory
from .devices import check_device
from .models.config import MODEL_TYPES
from .models.loading import _looks_like_hub_id, resolve_checkpoint
from .models.worldstereo import WorldStereo
from .optimization import execution_device
from .pipeline_stages import (
    PANO_BANK_FOV_DEG,  # noqa: F401 - re-exported (the panorama bank's views are documented here)
    PANO_BANK_VIEWS,  # noqa: F401
    _check_inputs,
    _check_model,
    _check_scene_memory,
    _finish_job,
    _Job,
    _load_condition_image,
    _new_scene_memory,
    _prepare_job,
    _reconstruction_depth_source,
    _resolve_depth_estimator,
    _run_model_stages,
    _batch_key,
    _VALIDATED_ARGS,
)
from .pipeline_types import GenerationRecord, ImageInput, SceneMemory, VideoOutput
from .pipeline_validation import RECONSTRUCTION_METHODS, check_save_path, validate_generation_args
from .reconstruction import reconstruct
from .vram import parameter_counts_of

__all__ = [
    "SceneMemory",
    "GenerationRecord",
    "generate_video",
    "generate_videos",
    "BatchedGeneration",
    "BatchResult",
    "generate_multi_view",
    "reconstruct_3d",
    "WorldStereoPipeline",
]

logger = logging.getLogger(__name__)


def generate_video(
    model: Any,
    condition_image: ImageInput,
    camera_trajectory: CameraTrajectory,
    num_frames: int = 16,
    height: int = 512,
    width: int = 512,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    point_cloud: Optional[Any] = None,
    use_geometric_memory: bool = True,
    use_spatial_memory: bool = True,
    seed: Optional[int] = None,
    output_format: str = "tensor",
    save_path: Optional[str] = None,
    progress_callback: Optional[Callable[[int, int, Tensor], None]] = None,
    *,
    prompt: str = "",
    negative_prompt: Optional[str] = None,
    panorama: Optional[bool] = None,
    depth_estimator: Any = None,
    memory: Optional[SceneMemory] = None,
    render_video: Optional[Union[Tensor, str, Path]] = None,
    render_mask: Optional[Union[Tensor, str, Path]] = None,
    reference_images: Optional[Tensor] = None,
    reference_w2c: Optional[Tensor] = None,
    ref_index: Optional[Union[Tensor, Sequence[int]]] = None,
    latents: Optional[Tensor] = None,
) -> VideoOutput:
    """Generate a multi-view-consistent video along ``camera_trajectory`` from one image.

    The ControlNet is conditioned either on the geometric memory rendered along the trajectory
    (default: depth of the condition image -> point cloud -> render + hole mask) or on a render
    video and hole mask you give (``render_video`` / ``render_mask``: e.g. the reference's
    ``render.mp4`` / ``render_mask.mp4``, or renders of a mesh, Gaussian splats or a scan made with
    other tools); the memory variants likewise retrieve reference views from the frame bank or take
    the ones you give (``reference_images`` / ``reference_w2c`` / ``ref_index``).

    Args:
        model: a :class:`~worldstereo.WorldStereo` (any of the three variants).
        condition_image: path, PIL image, or tensor (C,H,W) / (1,C,H,W) in [0,1]; frame 0 of the
            video. Resized to ``(height, width)`` (the trajectory's K is rescaled accordingly).
        camera_trajectory: ``num_frames`` cameras (world-to-camera OpenCV); frame 0 is the
            condition view. Brought to ``(height, width)`` with
            :meth:`~worldstereo.camera.CameraTrajectory.at_size` (presets keep square pixels).
            A preset (``units="median_depth"``) is scaled by the condition view's median depth
            (of the depth estimate, or of ``point_cloud`` seen from frame 0). Without
            intrinsics, K comes from the depth estimator when it predicts one, else from a 60°
            horizontal field of view (logged). The record in ``memory.history`` holds the
            per-frame render coverage; a warning names the first frame below
            :data:`~worldstereo.geometry.coverage.LOW_COVERAGE_THRESHOLD`.
        num_frames: number of frames; must equal ``len(camera_trajectory)``. Every frame is one
            keyframe latent (keyframe VAE).
        height, width: output size in pixels, multiples of 16.
        num_inference_steps: UniPC steps (camera / memory variants). The default, 50, is the
            interface document's; the reference inference script (and the CLI) uses 40. The
            distilled variant uses its fixed ``dmd_steps`` schedule (a different value logs a warning).
        guidance_scale: classifier-free guidance scale (only the text embedding changes in the
            unconditional pass); default 7.5 from the interface document, 5.0 in the reference
            script and the CLI. Ignored by the distilled variant.
        point_cloud: optional initial geometric memory, (N,3) or (N,6) xyz+rgb (rgb in [0,1],
            uint8 rescaled) or a :class:`~worldstereo.geometry.PointCloud`, in the trajectory's
            world frame; replaces the depth estimate of the condition image.
        use_geometric_memory: False -> the ControlNet gets an empty render and an all-hole mask
            (camera rays still guide).
        use_spatial_memory: False -> the frame bank is neither read nor updated: the memory
            variants use the given ``reference_images``, else only the condition view as reference
            (single-view inference of the reference).
        seed: random seed (same seed, device and dtype -> identical output); None -> a fresh
            seed, logged.
        output_format: ``"tensor"`` (float32 (T,C,H,W) in [0,1]), ``"numpy"`` (float32
            (T,H,W,C)), ``"pil"`` (list of RGB images) or ``"video"`` (writes ``save_path``,
            returns the tensor).
        save_path: ``.mp4`` path; written atomically whatever the format (under
            :mod:`worldstereo.parallel`, by the group's rank 0 only; every rank returns the video).
        progress_callback: ``callback(step, total_steps, latent)`` after every denoising step.
        prompt, negative_prompt: text conditioning (default negative prompt: the model config's).
        panorama: treat the condition image as a 2:1 equirectangular panorama (default: auto).
        depth_estimator: depth source for the condition image and memory updates (a
            :class:`~worldstereo.depth.DepthEstimator`, a model id / folder, a depth map or file);
            default ``model.depth_estimator`` or Depth Anything V2 Small.
        memory: a :class:`SceneMemory` to read and update (shared across videos by
            :func:`generate_multi_view`); default: a fresh one built from the condition image.
        render_video: pre-rendered ControlNet input, float ``(num_frames, 3, h, w)`` in [0, 1] (holes
            any colour; the reference's renders are grey there) or the path of a video file. Resized
            to ``(height, width)`` as the reference's loader does (bicubic, no antialiasing, clipped);
            frame 0 is replaced by the condition image. The geometric memory is then neither read nor
            updated and no depth is estimated. Requires ``render_mask``; excludes ``point_cloud``
            and ``use_geometric_memory=False``.
        render_mask: its hole mask, ``(num_frames, 1, h, w)`` / ``(num_frames, h, w)`` float or bool
            in [0, 1], **1 = hole** (not covered by the scene), or a video file (white = hole, first
            channel used). Nearest-neighbour resized and thresholded at 0.5; used as given otherwise
            (frame 0 is normally all 0).
        reference_images: memory variants: reference views ``(R, 3, h, w)`` float in [0, 1] (resized
            bicubic to the generation size) used instead of retrieving them from the frame bank; the
            frame bank is still updated with the generated frames. Requires ``reference_w2c``.
        reference_w2c: ``(R, 4, 4)`` world-to-camera (OpenCV) of the reference views, in the world
            frame of ``camera_trajectory`` (source of the camera tokens).
        ref_index: ``(R,)`` integer RoPE slot of each reference in ``[0, num_frames - 2]``: reference
            ``k`` is placed at target frame ``ref_index[k] + 1`` (the frame that retrieved it). Default
            ``[0]`` for a single reference (the reference's single-view inference: the condition image
            with ``camera_trajectory[0]``'s camera).
        latents: initial noise ``x_T``, float ``(1, 16, num_frames, height / 8, width / 8)`` (as the
            ``latents=`` of diffusers pipelines); default: drawn from ``seed``.

    Returns:
        The video in ``output_format``.

    Raises:
        TypeError / ValueError / FileNotFoundError: bad arguments, naming the parameter (before any
            model work).
    """
    request = _check_inputs(
        model, condition_image, camera_trajectory, memory=memory, panorama=panorama,
        num_frames=num_frames, height=height, width=width, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, point_cloud=point_cloud, use_geometric_memory=use_geometric_memory,
        use_spatial_memory=use_spatial_memory, seed=seed, output_format=output_format, save_path=save_path,
        progress_callback=progress_callback, prompt=prompt, negative_prompt=negative_prompt,
        depth_estimator=depth_estimator, render_video=render_video, render_mask=render_mask,
        reference_images=reference_images, reference_w2c=reference_w2c, ref_index=ref_index, latents=latents,
    )
    job = _prepare_job(model, request, memory)
    frames = _run_model_stages(model, [job])[0]
    return _finish_job(model, job, frames)


@dataclass
class BatchResult:
    """The outcome of one job of :class:`BatchedGeneration`.

    Attributes:
        key: the caller's key of the job.
        video: the video in the job's ``output_format`` (None when it failed).
        record: its :class:`GenerationRecord` (None when it failed).
        memory: the :class:`SceneMemory` it read and updated (None when it failed early).
        error: the exception that stopped the job, else None.
    """

    key: Any
    video: Optional[VideoOutput] = None
    record: Optional[GenerationRecord] = None
    memory: Optional[SceneMemory] = None
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        """True when the job produced its video."""
        return self.error is None


class BatchedGeneration:
    """Generate many videos, running compatible jobs through one batched forward.

    :meth:`submit` runs the per-job stages of :func:`generate_video` at once (inputs checked, image
    loaded, depth, render, references, text / CLIP / VAE conditioning, noise from the job's seed) and
    queues the job with the compatible ones; when ``batch_size`` compatible jobs are queued, they are
    denoised and decoded as one batch (conditioning stacked along the batch dimension), then each
    job's memory update, record and outputs follow. :meth:`flush` runs what is still queued. Each
    item's video equals (up to float rounding of batched matrix products, ~1e-6) the video of
    :func:`generate_video` with the same arguments.

    Compatible = same latent shape (``height``, ``width``, ``num_frames``), sampler steps
    (``num_inference_steps``; every job of the distilled variant), guidance (whether it runs and its
    ``guidance_scale``), conditioning shapes and, for the memory variants, the same number of
    references and the same ``ref_index`` (it is shared by the batch). A job given ``memory=`` runs
    alone, immediately (later jobs may read what it adds to that memory).

    Args:
        model: a :class:`~worldstereo.WorldStereo`.
        batch_size: most jobs per batched forward (1: one at a time).
        catch_errors: a failing job becomes a :class:`BatchResult` with ``error`` instead of raising;
            when a batched forward fails, its jobs are retried one by one.
    """

    def __init__(self, model: Any, batch_size: int = 1, *, catch_errors: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        _check_model(model)
        self.model = model
        self.batch_size = batch_size
        self.catch_errors = bool(catch_errors)
        self._queues: Dict[Tuple[Any, ...], List[_Job]] = {}

    @property
    def pending(self) -> int:
        """Jobs prepared and waiting for compatible ones."""
        return sum(len(q) for q in self._queues.values())

    def submit(self, key: Any, condition_image: ImageInput, camera_trajectory: CameraTrajectory,
               **kwargs: Any) -> List[BatchResult]:
        """Prepare one job (keyword arguments of :func:`generate_video`) and queue it; returns the
        results of the jobs that finished because of it (possibly none, possibly earlier jobs)."""
        try:
            args = _bind_generate_args(self.model, condition_image, camera_trajectory, kwargs)
            memory = args.pop("memory")
            request = _check_inputs(self.model, args.pop("condition_image"), args.pop("camera_trajectory"),
                                    memory=memory, panorama=args.pop("panorama"), **args)
            job = _prepare_job(self.model, request, memory)
        except Exception as exc:  # noqa: BLE001 - reported per job when catch_errors
            if not self.catch_errors:
                raise
            return [BatchResult(key, error=exc)]
        job.key = key
        if memory is not None or self.batch_size == 1:
            return self._run([job])
        queue_key = _batch_key(job)
        queue = self._queues.setdefault(queue_key, [])
        queue.append(job)
        if len(queue) < self.batch_size:
            return []
        del self._queues[queue_key]
        return self._run(queue)

    def flush(self) -> List[BatchResult]:
        """Run every queued job (in batches of the compatible ones); returns their results."""
        results: List[BatchResult] = []
        queues = list(self._queues.values())  # in the order of their first job
        self._queues = {}
        for queue in queues:
            results.extend(self._run(queue))
        return results

    def _run(self, jobs: List[_Job]) -> List[BatchResult]:
        try:
            frames = _run_model_stages(self.model, jobs)
        except Exception as exc:  # noqa: BLE001
            if not self.catch_errors:
                raise
            if len(jobs) > 1:
                logger.warning("batched forward of %d jobs failed (%s: %s); running them one by one", len(jobs),
                               type(exc).__name__, exc)
                return [r for job in jobs for r in self._run([job])]
            return [BatchResult(jobs[0].key, memory=jobs[0].memory, error=exc)]
        results = []
        for job, job_frames in zip(jobs, frames):
            try:
                video = _finish_job(self.model, job, job_frames)
            except Exception as exc:  # noqa: BLE001
                if not self.catch_errors:
                    raise
                results.append(BatchResult(job.key, memory=job.memory, error=exc))
                continue
            results.append(BatchResult(job.key, video, job.memory.history[-1], job.memory))
        return results


def _bind_generate_args(model: Any, condition_image: Any, camera_trajectory: Any,
                        kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """All :func:`generate_video` arguments (defaults filled in) except ``model``.

    Raises:
        TypeError: an unknown keyword argument.
    """
    bound = inspect.signature(generate_video).bind(model, condition_image, camera_trajectory, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("model")
    return args


def generate_videos(
    model: Any,
    jobs: Sequence[Mapping[str, Any]],
    batch_size: int = 1,
    *,
    return_exceptions: bool = False,
) -> List[Union[VideoOutput, BaseException]]:
    """Generate one video per job, running compatible jobs through one batched forward.

    Args:
        model: a :class:`~worldstereo.WorldStereo`.
        jobs: one dict of :func:`generate_video` keyword arguments per video (``condition_image`` and
            ``camera_trajectory`` required; ``save_path``, ``seed``, ``prompt``... per job).
        batch_size: most compatible jobs per batched forward (see :class:`BatchedGeneration` for
            "compatible"); each video equals its :func:`generate_video` result up to float rounding.
        return_exceptions: a job that fails while running yields its exception in the returned list
            and the other jobs go on (as ``asyncio.gather``); False: the first failure raises.

    Returns:
        The videos (or exceptions), in the order of ``jobs``.

    Raises:
        TypeError / ValueError: a job's arguments are invalid — every job is checked before any
            model work; the message starts with ``jobs[i]``.
    """
    if isinstance(jobs, (Mapping, str, bytes)) or not isinstance(jobs, Sequence):
        raise TypeError(f"jobs: expected a list of dicts of generate_video arguments, got {type(jobs).__name__}")
    if not isinstance(return_exceptions, bool):
        raise TypeError(f"return_exceptions: expected a bool, got {return_exceptions!r}")
    _check_model(model)
    for i, job in enumerate(jobs):
        _check_job_arguments(model, i, job)
    runner = BatchedGeneration(model, batch_size, catch_errors=return_exceptions)
    results: Dict[int, BatchResult] = {}
    for i, job in enumerate(jobs):
        kwargs = dict(job)
        for result in runner.submit(i, kwargs.pop("condition_image"), kwargs.pop("camera_trajectory"), **kwargs):
            results[result.key] = result
    for result in runner.flush():
        results[result.key] = result
    return [results[i].video if results[i].ok else results[i].error for i in range(len(jobs))]  # type: ignore[misc]


def _check_job_arguments(model: Any, index: int, job: Any, what: str = "jobs") -> None:
    """The checks of :func:`generate_video` that need no file or model work, for ``jobs[index]``
    (``what``: the name used in messages)."""
    if not isinstance(job, Mapping):
        raise TypeError(f"{what}[{index}]: expected a dict of generate_video arguments, got {type(job).__name__}")
    missing = [k for k in ("condition_image", "camera_trajectory") if k not in job]
    if missing:
        raise ValueError(f"{what}[{index}]: missing {missing}")
    kwargs = dict(job)
    try:
        args = _bind_generate_args(model, kwargs.pop("condition_image"), kwargs.pop("camera_trajectory"), kwargs)
        validate_generation_args(camera_trajectory=args["camera_trajectory"],
                                 **{k: args[k] for k in _VALIDATED_ARGS})
        _check_scene_memory(args.get("memory"))
        if args.get("panorama") is not None and not isinstance(args["panorama"], bool):
            raise TypeError(f"panorama: expected a bool or None, got {args['panorama']!r}")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}[{index}]: {exc}") from exc


# ----------------------------------------------------------------------------- multi-view / 3D


def generate_multi_view(
    model: Any,
    condition_image: ImageInput,
    trajectories: Sequence[CameraTrajectory],
    shared_memory: bool = True,
    **generation_kwargs: Any,
) -> List[VideoOutput]:
    """Generate one video per trajectory from the same condition image.

    With ``shared_memory=True`` the trajectories run in order against one :class:`SceneMemory`:
    each later video is generated with the point cloud and frame bank updated by the earlier
    ones. With ``False`` every trajectory starts from the condition image alone.

    Args:
        trajectories: non-empty list of trajectories (all start at the condition view).
        **generation_kwargs: passed to :func:`generate_video` (``save_path`` may be a list with one
            path per trajectory; ``memory`` may pass an existing :class:`SceneMemory`).

    Returns:
        The videos, one per trajectory, in ``output_format``.
    """
    _check_model(model)
    if isinstance(trajectories, (CameraTrajectory, str, bytes)) or not isinstance(trajectories, Sequence) \
            or not trajectories:
        raise ValueError("trajectories: expected a non-empty list of CameraTrajectory")
    for i, t in enumerate(trajectories):
        if not isinstance(t, CameraTrajectory):
            raise TypeError(f"trajectories[{i}]: expected a CameraTrajectory, got {type(t).__name__}")
    if not isinstance(shared_memory, bool):
        raise TypeError(f"shared_memory: expected a bool, got {shared_memory!r}")
    save_paths = generation_kwargs.pop("save_path", None)
    if isinstance(save_paths, (list, tuple)):
        if len(save_paths) != len(trajectories):
            raise ValueError(f"save_path: expected {len(trajectories)} paths (one per trajectory), got {len(save_paths)}")
        for i, p in enumerate(save_paths):
            check_save_path(p, f"save_path[{i}]")
    elif save_paths is not None:
        base = check_save_path(save_paths)
        save_paths = [str(base.with_name(f"{base.stem}_{i:02d}{base.suffix}")) for i in range(len(trajectories))]
    memory = generation_kwargs.pop("memory", None)
    _check_scene_memory(memory)
    if "num_frames" in generation_kwargs:
        nf = generation_kwargs.pop("num_frames")
    else:
        nf = None
    # validate every trajectory (and the arguments with it) before generating anything
    for i, traj in enumerate(trajectories):
        n = nf if nf is not None else len(traj)
        if n != len(traj):
            raise ValueError(f"trajectories[{i}]: has {len(traj)} frames but num_frames={n}")
        job = {**generation_kwargs, "condition_image": condition_image, "camera_trajectory": traj,
               "num_frames": len(traj), "save_path": None if save_paths is None else save_paths[i]}
        _check_job_arguments(model, i, job, what="trajectories")
    image = _load_condition_image(condition_image)
    videos: List[VideoOutput] = []
    for i, traj in enumerate(trajectories):
        mem = memory if shared_memory else None
        kwargs = dict(generation_kwargs)
        if save_paths is not None:
            kwargs["save_path"] = save_paths[i]
        if shared_memory and memory is None:
            memory = _new_scene_memory(
                model, kwargs.get("use_geometric_memory", True), kwargs.get("use_spatial_memory", True)
            )
            mem = memory
        videos.append(generate_video(model, image, traj, num_frames=len(traj), memory=mem, **kwargs))
    return videos


def reconstruct_3d(
    model: Any,
    condition_image: ImageInput,
    camera_trajectory: CameraTrajectory,
    reconstruction_method: str = "point_cloud",
    num_frames: int = 16,
    **generation_kwargs: Any,
) -> Tuple[Union[Tensor, np.ndarray], Dict[str, Any]]:
    """Generate a video along ``camera_trajectory`` and reconstruct the scene from it.

    Returns:
        ``(video, reconstruction)`` with ``reconstruction`` holding ``points`` (N,3), ``colors``
        (N,3) in [0,1], ``normals`` (N,3), ``cameras`` (the trajectory at the video size),
        ``quality_metrics`` (masked re-projection PSNR between frames, point count), and
        ``mesh`` (``trimesh.Trimesh``) for ``"mesh"`` / ``field`` for ``"neural_field"``.

    Depth: every generated frame's depth is estimated with ``depth_estimator`` (default: the
    model's estimator, else Depth Anything V2 Small). A fixed depth map given as
    ``depth_estimator`` only describes the condition image: the frames then use the model's own
    estimator (with a warning), and without one a ``ValueError`` is raised before generation.
    """
    if reconstruction_method not in RECONSTRUCTION_METHODS:
        raise ValueError(
            f"reconstruction_method: expected one of {list(RECONSTRUCTION_METHODS)}, got {reconstruction_method!r}"
        )
    output_format = generation_kwargs.pop("output_format", "tensor")
    if output_format not in ("tensor", "numpy", "video"):
        raise ValueError(f"output_format: reconstruct_3d returns a tensor or an array; expected 'tensor', "
                         f"'numpy' or 'video', got {output_format!r}")
    _check_model(model)
    memory = generation_kwargs.pop("memory", None)
    _check_scene_memory(memory)
    memory = memory if memory is not None else SceneMemory()
    frame_depth = _reconstruction_depth_source(model, generation_kwargs.get("depth_estimator"))
    frames = generate_video(
        model, condition_image, camera_trajectory, num_frames=num_frames, output_format="tensor",
        memory=memory, **generation_kwargs,
    )
    trajectory = memory.history[-1].trajectory  # scene units, K at the video size

    estimator = _resolve_depth_estimator(model, frame_depth)
    reference_points = memory.geometric.points if memory.geometric is not None and not memory.geometric.is_empty else None

    # reconstruct on the accelerator the model generated on (the frames come back on the CPU)
    result = reconstruct(frames.to(execution_device(model)), trajectory, method=reconstruction_method,
                         depth=estimator, reference_points=reference_points)
    rec = {key: value.cpu() if isinstance(value, Tensor) else value
           for key, value in (result.as_dict() if hasattr(result, "as_dict") else dict(result)).items()}
    rec.setdefault("cameras", trajectory)
    video: Union[Tensor, np.ndarray] = frames if output_format != "numpy" else frames.permute(0, 2, 3, 1).numpy()
    return video, rec


# ----------------------------------------------------------------------------- pipeline class


def _check_pretrained_args(model_path: Any, variant: Any, kwargs: Mapping[str, Any]) -> None:
    """The checks of ``WorldStereo.from_pretrained`` that read no weights: keyword names, ``variant``
    and, for a local folder, the checkpoint layout and configs (so a bad path fails before loading)."""

    allowed = set(inspect.signature(WorldStereo.from_pretrained).parameters) - {"cls", "name_or_path", "variant"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"{unknown[0]}: not an argument of WorldStereo.from_pretrained (accepted: {sorted(allowed)})")
    if Path(model_path).expanduser().exists() or not _looks_like_hub_id(str(model_path)):
        resolve_checkpoint(model_path, variant, local_files_only=True)  # json files only, no weights
    elif variant is not None:

        if variant not in MODEL_TYPES:
            raise ValueError(f"variant: expected one of {list(MODEL_TYPES)}, got {variant!r}")


class WorldStereoPipeline:
    """A loaded model plus device settings, with the functional API as methods.

    Args:
        model_path: a folder (reference layout, one variant sub-folder, or our ``save_pretrained``
            folder) or a Hugging Face id.
        device: ``"cuda"`` (default), ``"cpu"``, ... Asking for CUDA where there is none raises a
            :class:`~worldstereo.errors.UnavailableError` (a ``RuntimeError`` and a ``ValueError``)
            that suggests ``device="cpu"``.
        torch_dtype: weight dtype; float16 on CPU falls back to float32 with a warning.
        enable_xformers: use xFormers attention when installed (else PyTorch SDPA, one warning).
        enable_cpu_offload: keep components on the CPU and move each to the accelerator only for
            its own forward (a warning and no-op on a CPU device).
        memory_tier: place the model by memory tier instead (a name of
            :data:`worldstereo.optimization.MEMORY_TIERS`, e.g. ``"group_offload"`` for a 24 GB card,
            or ``"auto"``: :func:`~worldstereo.optimization.suggest_memory_tier` for the device's
            memory). Tiers other than ``resident``/``fp8``/``int8``/``float8`` need an accelerator.
            Exclusive with ``enable_cpu_offload``.
        variant: which sub-folder of a reference checkpoint root to load (default
            ``worldstereo-memory``).
        **from_pretrained_kwargs: passed to :meth:`WorldStereo.from_pretrained`.
    """

    def __init__(
        self,
        model_path: str,
        device: str = "cuda",
        torch_dtype: torch.dtype = torch.float16,
        enable_xformers: bool = True,
        enable_cpu_offload: bool = False,
        *,
        variant: Optional[str] = None,
        memory_tier: Optional[str] = None,
        **from_pretrained_kwargs: Any,
    ) -> None:
        if not isinstance(model_path, (str, Path)):
            raise TypeError(f"model_path: expected a str or Path, got {type(model_path).__name__}")

        dev = check_device(device, "device")  # CUDA where there is none: UnavailableError (a RuntimeError)
        for name, flag in (("enable_xformers", enable_xformers), ("enable_cpu_offload", enable_cpu_offload)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {flag!r}")
        if torch_dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"torch_dtype: expected torch.float16, torch.bfloat16 or torch.float32, got {torch_dtype}")
        if dev.type == "cpu" and torch_dtype == torch.float16:
            logger.warning("torch_dtype: float16 is not supported for CPU inference; using float32")
            torch_dtype = torch.float32

        tier = self._check_memory_tier(memory_tier, dev, enable_cpu_offload)
    
        _check_pretrained_args(model_path, variant, from_pretrained_kwargs)

        self.model = WorldStereo.from_pretrained(model_path, variant, torch_dtype=torch_dtype, **from_pretrained_kwargs)
        self.device = dev
        self.torch_dtype = torch_dtype
        self.memory_tier: Optional[str] = None

        if enable_xformers:
            optimization.enable_xformers_memory_efficient_attention(self.model)
        if tier is not None:
            if tier == "auto":

                total_gb = torch.cuda.get_device_properties(dev).total_memory / 1e9
                tier = optimization.suggest_memory_tier(total_gb, self.model.variant,
                                                        counts=parameter_counts_of(self.model))
                logger.info("memory_tier='auto': %s for %.1f GB on %s", tier, total_gb, dev)
            optimization.enable_memory_tier(self.model, tier, device=dev)
            self.memory_tier = tier
        elif enable_cpu_offload:
            if dev.type == "cpu":
                logger.warning("enable_cpu_offload: ignored on a CPU device")
                self.model.to(dev)
            else:
                optimization.enable_model_cpu_offload(self.model, device=dev)
        else:
            self.model.to(dev)
        self.memory: Optional[SceneMemory] = None

    @staticmethod
    def _check_memory_tier(memory_tier: Optional[str], dev: torch.device, enable_cpu_offload: bool) -> Optional[str]:
        """Validate ``memory_tier`` before loading anything."""
        if memory_tier is None:
            return None

        if memory_tier != "auto":
            tier = optimization.get_memory_tier(memory_tier, "memory_tier")  # ValueError listing the names
            if tier.needs_accelerator and dev.type == "cpu":
                raise ValueError(f"memory_tier: {memory_tier!r} needs an accelerator device, got device={str(dev)!r}; "
                                 f"on the CPU use 'resident' (or the lossy 'fp8' / 'int8' / 'float8')")
        elif dev.type != "cuda":
            raise ValueError(f"memory_tier: 'auto' sizes the tier from the CUDA device's memory; got device={str(dev)!r}")
        if enable_cpu_offload:
            raise ValueError("memory_tier / enable_cpu_offload: pass one of them (the 'model_offload' tier is the "
                             "CPU offload)")
        return memory_tier

    def generate_video(self, condition_image: ImageInput, camera_trajectory: CameraTrajectory, **kwargs: Any) -> VideoOutput:
        """:func:`generate_video` with this pipeline's model."""
        return generate_video(self.model, condition_image, camera_trajectory, **kwargs)

    def generate_multi_view(self, condition_image: ImageInput, trajectories: Sequence[CameraTrajectory],
                            shared_memory: bool = True, **kwargs: Any) -> List[VideoOutput]:
        """:func:`generate_multi_view` with this pipeline's model."""
        return generate_multi_view(self.model, condition_image, trajectories, shared_memory, **kwargs)

    def reconstruct_3d(self, condition_image: ImageInput, camera_trajectory: CameraTrajectory,
                       reconstruction_method: str = "point_cloud", num_frames: int = 16,
                       **kwargs: Any) -> Tuple[Union[Tensor, np.ndarray], Dict[str, Any]]:
        """:func:`reconstruct_3d` with this pipeline's model."""
        return reconstruct_3d(self.model, condition_image, camera_trajectory, reconstruction_method, num_frames, **kwargs)
