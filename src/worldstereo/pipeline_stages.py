"""The stages of :func:`~worldstereo.pipeline.generate_video`, as a diffusers pipeline's ``__call__``
runs them: check inputs, prepare memory and geometry, retrieve references, encode the conditioning,
prepare latents, denoise, decode, update the memory, make the record, write the outputs.

Each stage takes and returns plain data (the dataclasses here), so that the public functions of
:mod:`worldstereo.pipeline` can run the per-video stages for several videos and the model stages on
a batch: :func:`_prepare_job` runs the stages up to the initial noise for one video,
:func:`_run_model_stages` denoises and decodes compatible jobs stacked along the batch dimension,
:func:`_finish_job` runs the rest per video. Everything here is internal; the conventions are those of
:mod:`worldstereo.pipeline` (w2c OpenCV cameras with pixel intrinsics, images in [0, 1], hole masks
1 = hole, frame 0 = the condition view).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .camera import CameraTrajectory, camera_qt_tokens, plucker_embedding
from .camera.fit import scene_median_depth
from .depth import get_depth_estimator
from .depth.transformers_backend import DEFAULT_DEPTH_MODEL
from .depth.user import DEPTH_FILE_SUFFIXES, UserDepth
from .geometry import PointCloud
from .geometry.coverage import render_coverage, warn_low_coverage
from .geometry.panorama import equirect_to_perspective, lift_equirect_depth, perspective_from_equirect
from .io.image import load_image, rescale_intrinsics, resize_image
from .io.video import write_video
from .memory import GlobalGeometricMemory, SpatialStereoMemory
from .models.conditioning import prepare_reference_latent
from .optimization import execution_device
from .parallel import decode_split, is_writer, parallel_state
from .sampling import denoise
from .pipeline_inputs import GivenInputs, load_given_inputs
from .pipeline_types import GenerationRecord, ImageInput, SceneMemory, VideoOutput
from .pipeline_validation import validate_generation_args

logger = logging.getLogger(__name__)

#: Horizontal field of view used when neither the trajectory nor the depth estimator gives intrinsics.
DEFAULT_FOV_DEG = 60.0
#: Grey of uncovered pixels in the render video (the reference renders holes as 0 in [-1, 1]).
HOLE_GREY = 0.5


# ----------------------------------------------------------------------------- small helpers


def _load_condition_image(condition_image: Any) -> Tensor:

    return load_image(condition_image, name="condition_image")


def _is_panorama(image: Tensor) -> bool:
    h, w = image.shape[-2:]
    return w == 2 * h


def _resolve_depth_estimator(model: Any, depth_estimator: Any) -> Any:
    """The depth source: the argument, else ``model.depth_estimator``, else the default model id."""

    source = depth_estimator if depth_estimator is not None else getattr(model, "depth_estimator", None)
    if source is None:

        logger.info("depth: using the default depth model %s", DEFAULT_DEPTH_MODEL)
        source = DEFAULT_DEPTH_MODEL
    return get_depth_estimator(source)


def _frame_depth_estimator(model: Any, estimator: Any) -> Any:
    """The estimator for generated frames: a user-supplied depth map only describes the condition
    image, so it falls back to ``model.depth_estimator`` (None when there is none)."""

    if isinstance(estimator, UserDepth):
        fallback = getattr(model, "depth_estimator", None)
        return None if fallback is None else _resolve_depth_estimator(model, fallback)
    return estimator


def _reconstruction_depth_source(model: Any, depth_estimator: Any) -> Any:
    """The depth source :func:`reconstruct_3d` runs on every generated frame.

    A fixed depth map (a tensor / array, a depth file, a ``UserDepth``) describes only the condition
    image: the generated frames then use ``model.depth_estimator``, with a warning; without one this
    raises instead of silently reusing the condition view's depth for every frame.
    """

    fixed = isinstance(depth_estimator, (UserDepth, Tensor, np.ndarray)) or (
        isinstance(depth_estimator, (str, Path)) and Path(depth_estimator).suffix.lower() in DEPTH_FILE_SUFFIXES)
    if not fixed:
        return depth_estimator
    fallback = getattr(model, "depth_estimator", None)
    if fallback is None:
        raise ValueError(
            "depth_estimator: a fixed depth map only describes the condition image, but reconstruct_3d needs the "
            "depth of every generated frame; pass a depth model (a DepthEstimator, a transformers model id or "
            "folder, or 'moge') or use a model that carries a depth estimator"
        )
    logger.warning("depth_estimator: the fixed depth map is used for the condition image only; the generated "
                   "frames are reconstructed with the model's depth estimator")
    return fallback


def _new_scene_memory(model: Any, use_geometric: bool, use_spatial: bool) -> SceneMemory:

    geometric = GlobalGeometricMemory(**model.global_memory_config) if use_geometric else None
    spatial = SpatialStereoMemory(**model.spatial_memory_config) if (use_spatial and model.is_memory) else None
    return SceneMemory(geometric=geometric, spatial=spatial)


def _trajectory_at_size(trajectory: CameraTrajectory, height: int, width: int, depth_K: Optional[Tensor],
                        depth_size: Optional[Tuple[int, int]]) -> CameraTrajectory:
    """The trajectory with intrinsics at ``(height, width)``: :meth:`CameraTrajectory.at_size`
    (field-of-view intrinsics such as a preset's are rebuilt with square pixels; pixel intrinsics
    are rescaled, with a warning when that stretches the pixels), else the depth estimator's K,
    else a :data:`DEFAULT_FOV_DEG` horizontal field of view."""
    if trajectory.has_intrinsics:
        return trajectory.at_size(height, width)
    if depth_K is not None and depth_size is not None:

        K = rescale_intrinsics(depth_K.double(), depth_size, (height, width))
        logger.info("camera_trajectory: no intrinsics; using the depth estimator's (fx=%.1f px)", float(K[0, 0]))
        return trajectory.with_intrinsics(K, height=height, width=width)
    logger.info("camera_trajectory: no intrinsics; using a %.0f deg horizontal field of view", DEFAULT_FOV_DEG)
    return trajectory.with_intrinsics(height=height, width=width, fov_deg=DEFAULT_FOV_DEG)


def _median_valid_depth(depth: Tensor, valid: Tensor) -> Optional[float]:
    """Median of the valid (> 0) depth, or None when there is none."""
    mask = valid.bool() & (depth > 0)
    return float(depth[mask].float().median()) if bool(mask.any()) else None


def _format_output(frames: Tensor, output_format: str) -> VideoOutput:
    """frames (T,3,H,W) float32 [0,1] -> the requested format."""
    if output_format in ("tensor", "video"):
        return frames
    if output_format == "numpy":
        return frames.permute(0, 2, 3, 1).contiguous().numpy()
    arr = (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def _to_model_space(x: Tensor) -> Tensor:
    """[0,1] -> [-1,1]."""
    return x * 2.0 - 1.0


# ----------------------------------------------------------------------------- generate_video


class _CallCounter:
    """Wraps the transformer to count forward passes (reported in :class:`GenerationRecord`)."""

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.transformer(*args, **kwargs)

    def cache_context(self, name: str) -> Any:
        """The transformer's diffusers ``cache_context`` (a no-op context without one)."""
        make = getattr(self.transformer, "cache_context", None)
        return make(name) if callable(make) else contextlib.nullcontext()

    def parameters(self):  # noqa: D401 - delegation used by the sampler's dtype lookup
        return self.transformer.parameters()

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.transformer, "dtype", next(self.transformer.parameters()).dtype)


#: (yaw, pitch) in degrees of the perspective crops that seed the frame bank of a panorama
#: (the reference's ``pano_bank``: views around the horizon plus views up and down).
PANO_BANK_VIEWS: Tuple[Tuple[float, float], ...] = tuple(
    [(float(y), 0.0) for y in range(0, 360, 45)]
    + [(float(y), p) for y in range(0, 360, 90) for p in (35.0, -35.0)]
)
#: Horizontal field of view of the panorama bank crops.
PANO_BANK_FOV_DEG = 90.0


def _add_pano_bank(spatial: Any, pano: Tensor, height: int, width: int) -> None:
    """Add perspective crops of an equirectangular ``pano`` (3,Hp,Wp) with their cameras
    (panorama centre at the world origin, w2c of the panorama = identity) to the bank."""

    images, w2cs, Ks = [], [], []
    for yaw, pitch in PANO_BANK_VIEWS:
        img, K, w2c = perspective_from_equirect(pano, yaw, pitch, PANO_BANK_FOV_DEG, height, width)
        images.append(img.clamp(0, 1))
        w2cs.append(w2c)
        Ks.append(K)
    names = [f"pano_bank/{i:04d}" for i in range(len(images))]
    spatial.add(torch.stack(images), torch.stack(w2cs), torch.stack(Ks), names=names)


def _as_point_cloud(point_cloud: Any) -> Any:

    if isinstance(point_cloud, PointCloud):
        return point_cloud
    return PointCloud.from_tensor(torch.as_tensor(point_cloud))


def _check_scene_memory(memory: Any, name: str = "memory") -> None:
    """``memory``: None or a :class:`SceneMemory` whose parts are memories (or None)."""
    if memory is None:
        return
    if not isinstance(memory, SceneMemory):
        raise TypeError(f"{name}: expected a SceneMemory or None, got {type(memory).__name__}")

    for part, cls in (("geometric", GlobalGeometricMemory), ("spatial", SpatialStereoMemory)):
        value = getattr(memory, part)
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"{name}.{part}: expected a {cls.__name__} or None, got {type(value).__name__}")


def _check_model(model: Any) -> None:
    required = ("transformer", "vae", "encode_prompt", "encode_image", "make_scheduler", "is_memory")
    missing = [name for name in required if not hasattr(model, name)]
    if missing:
        raise TypeError(f"model: expected a WorldStereo model, got {type(model).__name__} (missing {missing})")


# ----------------------------------------------------------------------------- generation stages
#
# generate_video runs these named stages in order (like a diffusers pipeline's __call__):
#   _check_inputs -> _prepare_memory -> _prepare_geometry -> _prepare_references
#   -> _encode_conditioning -> _prepare_latents -> _denoise_latents -> _decode_frames
#   -> _update_memory -> _make_record -> _write_outputs
# Each stage takes and returns plain data (the dataclasses below), so that callers can run the
# per-video stages for several videos and the model stages on a batch: _prepare_job runs the stages up
# to the initial noise for one video, _run_model_stages denoises and decodes compatible jobs stacked
# along the batch dimension, _finish_job runs the rest per video (BatchedGeneration, generate_videos).


@dataclass
class _Request:
    """The validated arguments of one :func:`generate_video` call."""

    image_full: Tensor  # (3, H0, W0) in [0, 1], as loaded
    panorama: bool
    trajectory: CameraTrajectory  # as given (any size, maybe without intrinsics)
    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    point_cloud: Any
    use_geometric_memory: bool
    use_spatial_memory: bool
    seed: int
    output_format: str
    save_path: Optional[str]
    progress_callback: Optional[Callable[[int, int, Tensor], None]]
    prompt: str
    negative_prompt: Optional[str]
    depth_estimator: Any
    given: GivenInputs = field(default_factory=GivenInputs)


@dataclass
class _Scene:
    """The condition view and the geometric-memory render along the trajectory (one video).

    Attributes:
        image: condition view (3, H, W) in [0, 1] at the generation size.
        pano: the equirectangular condition image (3, Hp, Wp) for panoramas, else None.
        w2c, K: trajectory at the generation size, in scene units, float32 (F, 4, 4) / (F, 3, 3).
        render_video: ControlNet render (F, 3, H, W) in [0, 1], frame 0 = ``image``, holes grey.
        hole_mask: (F, 1, H, W), 1 = hole, frame 0 = 0.
        estimator: the depth estimator resolved for this call (None when none was needed).
        render_depth: z-depth of the render (F, 1, H, W), 0 at holes (None without geometry).
        coverage: per-frame share of non-hole pixels of ``hole_mask``.
        trajectory: the :class:`CameraTrajectory` behind ``w2c`` / ``K``.
        median_depth: the condition view's median depth in scene units (None when unknown).
    """

    image: Tensor
    pano: Optional[Tensor]
    w2c: Tensor
    K: Tensor
    render_video: Tensor
    hole_mask: Tensor
    estimator: Any = None
    render_depth: Optional[Tensor] = None
    coverage: List[float] = field(default_factory=list)
    trajectory: Optional[CameraTrajectory] = None
    median_depth: Optional[float] = None


@dataclass
class _References:
    """Reference views of the memory variants: images (R, 3, H, W) in [0, 1], w2c (R, 4, 4),
    RoPE slots ``ref_index`` (R,) int64 in [0, F-2], bank names."""

    images: Tensor
    w2c: Tensor
    ref_index: Tensor
    names: List[str]


@dataclass
class _Conditioning:
    """Everything the sampler feeds the transformer besides the latents (batch first).

    Attributes:
        condition: (B, 20, F, h, w) float32 I2V condition ([frame mask 4, image latent 16]).
        prompt_embeds / negative_embeds: (B, 512, text_dim); negative None without guidance.
        guidance_scale: CFG scale actually used (1.0 = no guidance).
        model_kwargs: the other transformer keywords, constant across steps.
    """

    condition: Tensor
    prompt_embeds: Tensor
    negative_embeds: Optional[Tensor]
    guidance_scale: float
    model_kwargs: Dict[str, Any]


def _check_inputs(model: Any, condition_image: ImageInput, camera_trajectory: CameraTrajectory, *,
                  memory: Optional[SceneMemory], panorama: Optional[bool], **args: Any) -> _Request:
    """Validate every argument (before any model work), load the image and the given conditioning,
    pick the seed."""
    validate_generation_args(camera_trajectory=camera_trajectory, **{k: args[k] for k in _VALIDATED_ARGS})
    _check_model(model)
    given = load_given_inputs(
        model, num_frames=args["num_frames"], height=args["height"], width=args["width"],
        point_cloud=args["point_cloud"], use_geometric_memory=args["use_geometric_memory"],
        **{k: args.pop(k) for k in _GIVEN_ARGS},
    )
    _check_scene_memory(memory)
    image_full = _load_condition_image(condition_image)
    if panorama is None:
        panorama = _is_panorama(image_full)
    elif not isinstance(panorama, bool):
        raise TypeError(f"panorama: expected a bool or None, got {panorama!r}")
    if panorama and image_full.shape[-1] != 2 * image_full.shape[-2]:
        raise ValueError(f"condition_image: panorama=True needs a 2:1 equirectangular image, got "
                         f"{image_full.shape[-1]}x{image_full.shape[-2]}")
    seed = args.pop("seed")
    if seed is None:
        seed = secrets.randbelow(2**31 - 1)  # leaves torch's global generator alone
        logger.info("seed: none given, using %d", seed)
    return _Request(image_full=image_full, panorama=panorama, trajectory=camera_trajectory, seed=int(seed),
                    given=given, **args)


#: The generate_video arguments checked by :func:`validate_generation_args` (besides the trajectory).
_VALIDATED_ARGS = (
    "num_frames", "height", "width", "num_inference_steps", "guidance_scale", "point_cloud",
    "use_geometric_memory", "use_spatial_memory", "seed", "output_format", "save_path", "progress_callback",
    "prompt", "negative_prompt",
)
#: The generate_video arguments of caller-given conditioning (see :mod:`worldstereo.pipeline_inputs`).
_GIVEN_ARGS = ("render_video", "render_mask", "reference_images", "reference_w2c", "ref_index", "latents")


def _prepare_memory(model: Any, request: _Request, memory: Optional[SceneMemory]) -> SceneMemory:
    """The scene memory to read and update: the caller's, completed with what this call needs (a
    given render replaces the geometric memory, which is then not created)."""
    use_geometric = request.use_geometric_memory and not request.given.has_render
    if memory is None:
        return _new_scene_memory(model, use_geometric, request.use_spatial_memory)
    if memory.spatial is None and request.use_spatial_memory and model.is_memory:

        memory.spatial = SpatialStereoMemory(**model.spatial_memory_config)
    if memory.geometric is None and use_geometric:

        memory.geometric = GlobalGeometricMemory(**model.global_memory_config)
    return memory


def _prepare_geometry(model: Any, request: _Request, memory: SceneMemory) -> _Scene:
    """Condition view, trajectory at the generation size in scene units and the point-cloud render
    with its hole mask (the ControlNet inputs) and coverage. Estimates the condition image's depth
    when the geometric memory is empty and no point cloud was given; with a given render, uses it
    instead (no depth)."""
    if request.given.has_render:
        return _given_render_scene(request, memory)
    height, width, num_frames = request.height, request.width, request.num_frames
    pano = request.image_full if request.panorama else None
    geometric = memory.geometric if request.use_geometric_memory else None
    need_depth = geometric is not None and geometric.is_empty and request.point_cloud is None
    needs_estimator_later = geometric is not None and getattr(geometric, "update_frequency", "never") == "auto"
    estimator = None
    depth_pred = None
    if need_depth or needs_estimator_later:
        estimator = _resolve_depth_estimator(model, request.depth_estimator)
    if need_depth:
        depth_pred = estimator(request.image_full)
    with_K = depth_pred is not None and pano is None
    trajectory = _trajectory_at_size(
        request.trajectory, height, width,
        depth_pred.K if with_K else None,
        (depth_pred.height, depth_pred.width) if with_K else None,
    )
    if depth_pred is not None:
        memory.median_depth = _median_valid_depth(depth_pred.depth, depth_pred.valid_mask)
    elif request.point_cloud is not None and geometric is not None:
        memory.median_depth = _scene_median_depth(_as_point_cloud(request.point_cloud), trajectory)
    elif memory.median_depth is None and geometric is not None and not geometric.is_empty:
        memory.median_depth = _scene_median_depth(geometric.points, trajectory)
    trajectory = _in_scene_units(trajectory, memory.median_depth)
    w2c = trajectory.w2c.float()
    K = trajectory.K.float()
    image = _condition_view(request, trajectory)
    if geometric is None:
        render_video = torch.full((num_frames, 3, height, width), HOLE_GREY)
        hole_mask = torch.ones(num_frames, 1, height, width)
        return _Scene(image, pano, w2c, K, render_video, hole_mask, estimator, None, [0.0] * num_frames,
                      trajectory, memory.median_depth)

    if request.point_cloud is not None:
        geometric.from_point_cloud(_as_point_cloud(request.point_cloud), condition_image=image)
    elif geometric.is_empty and pano is not None:

        cloud = lift_equirect_depth(depth_pred.depth.float(), pano, valid_mask=depth_pred.valid_mask)
        geometric.from_point_cloud(cloud, condition_image=image)
    elif geometric.is_empty:

        depth = resize_image(depth_pred.depth[None].float(), height, width, mode="nearest")[0]
        valid = resize_image(depth_pred.valid_mask[None].float(), height, width, mode="nearest")[0] > 0.5
        geometric.initialize(image, depth * valid, K[0], w2c[0], valid_mask=valid)
    render = geometric.render(w2c, K, height, width, condition_image=image)
    hole_mask = render.hole_mask.float().clamp(0, 1)
    render_video = torch.where(hole_mask > 0.5, torch.full_like(render.video, HOLE_GREY), render.video)
    render_video[0] = image
    hole_mask[0] = 0.0
    render_depth = torch.where(hole_mask > 0.5, torch.zeros_like(render.depth), render.depth.float())
    coverage = render_coverage(hole_mask)
    warn_low_coverage(coverage, what="generate_video: point-cloud render", log=logger)
    return _Scene(image, pano, w2c, K, render_video, hole_mask, estimator, render_depth, coverage, trajectory,
                  memory.median_depth)


def _scene_median_depth(points: Any, trajectory: CameraTrajectory) -> Optional[float]:
    """Median depth of ``points`` seen from frame 0 (None when frame 0 sees none of them)."""

    try:
        return scene_median_depth(points, trajectory.w2c[0], trajectory.K[0], trajectory.height, trajectory.width)
    except ValueError:
        return None


def _in_scene_units(trajectory: CameraTrajectory, median_depth: Optional[float]) -> CameraTrajectory:
    """A preset (``units="median_depth"``) converted with the scene's median depth (1.0 when unknown)."""
    if trajectory.units == "scene":
        return trajectory
    if median_depth is None:
        logger.info("camera_trajectory: the scene's median depth is unknown (no depth, no point cloud); the preset's "
                    "distances are taken as scene units")
        median_depth = 1.0
    elif abs(median_depth - 1.0) > 1e-6:
        logger.info("camera_trajectory: preset distances are in median depths; scene median depth %.4g", median_depth)
    return trajectory.in_scene_units(median_depth)


def _condition_view(request: _Request, trajectory: CameraTrajectory) -> Tensor:
    """The condition view (3, H, W) in [0, 1] at the generation size: the image resized, or for a
    panorama its perspective crop seen through ``trajectory`` frame 0 (shared centre)."""
    if request.panorama:

        return equirect_to_perspective(request.image_full, trajectory.w2c[0].float(), trajectory.K[0].float(),
                                       request.height, request.width).clamp(0, 1)

    return resize_image(request.image_full, request.height, request.width).clamp(0, 1)


def _given_render_scene(request: _Request, memory: SceneMemory) -> _Scene:
    """The scene of a given render: the reference's data loader replaces render frame 0 by the
    condition image and uses the (thresholded) hole mask as given. Its coverage is measured like
    our own render's; with no depth, a preset is converted with the memory's median depth when an
    earlier video set one, else taken as scene units."""
    trajectory = _trajectory_at_size(request.trajectory, request.height, request.width, None, None)
    trajectory = _in_scene_units(trajectory, memory.median_depth)
    image = _condition_view(request, trajectory)
    render_video = request.given.render_video.clone()
    render_video[0] = image
    pano = request.image_full if request.panorama else None
    hole_mask = request.given.render_mask.clone()
    coverage = render_coverage(hole_mask)
    warn_low_coverage(coverage, what="generate_video: given render", log=logger)
    return _Scene(image, pano, trajectory.w2c.float(), trajectory.K.float(), render_video, hole_mask, None,
                  None, coverage, trajectory, memory.median_depth)


def _prepare_references(model: Any, request: _Request, scene: _Scene, memory: SceneMemory) -> Optional[_References]:
    """Reference views for the memory variants (None for the camera variant): the given ones,
    retrieved from the frame bank by frustum overlap, or the condition view alone without spatial
    memory."""
    if not model.is_memory:
        return None
    given = request.given
    if given.has_references:
        names = [f"given/{k:02d}" for k in range(given.reference_images.shape[0])]
        return _References(given.reference_images, given.reference_w2c, given.ref_index, names)
    if memory.spatial is None or not request.use_spatial_memory:
        return _References(scene.image[None], scene.w2c[:1], torch.zeros(1, dtype=torch.long), ["condition"])
    if len(memory.spatial) == 0:
        memory.spatial.add(scene.image[None], scene.w2c[:1], scene.K[:1], names=["condition"], pin=True)
        if scene.pano is not None:
            _add_pano_bank(memory.spatial, scene.pano, request.height, request.width)
    retrieved = memory.spatial.retrieve(scene.w2c, scene.K, request.height, request.width)
    return _References(retrieved.images, retrieved.w2c, retrieved.ref_index, list(retrieved.names))


def _encode_conditioning(model: Any, request: _Request, scene: _Scene, refs: Optional[_References],
                         device: torch.device) -> _Conditioning:
    """Text, CLIP and first-frame conditioning, the render latent, the Plücker map and (memory
    variants) the reference latent with its camera tokens; batch 1, on ``device``."""
    dtype = model.dtype
    height, width = request.height, request.width
    with torch.no_grad():
        condition = model.prepare_image_condition(_to_model_space(scene.image)[None].to(device),
                                                  request.num_frames).float()
        image_embeds = model.encode_image(scene.image[None].to(device))
        prompt_embeds = model.encode_prompt(request.prompt)
        use_cfg = (not model.is_distilled) and request.guidance_scale > 1.0
        negative_embeds = None
        if use_cfg:
            neg = request.negative_prompt if request.negative_prompt is not None \
                else (model.config.negative_prompt or "")
            negative_embeds = model.encode_prompt(neg)
        render_latent = model.encode_video(_to_model_space(scene.render_video).permute(1, 0, 2, 3)[None].to(device))
        model_kwargs: Dict[str, Any] = {
            "encoder_hidden_states_image": image_embeds.to(dtype),
            "render_latent": render_latent.to(dtype),
            "render_mask": scene.hole_mask.permute(1, 0, 2, 3)[None].to(device, dtype),
            "camera_embedding": plucker_embedding(scene.K, scene.w2c, height, width).to(device, dtype),
        }
        if refs is not None:

            z_ref = model.encode_video(_to_model_space(refs.images).permute(1, 0, 2, 3)[None].to(device))
            qt, qt_ref = camera_qt_tokens(scene.w2c, refs.w2c)
            model_kwargs.update(
                reference_latent=prepare_reference_latent(z_ref).to(dtype),
                ref_index=refs.ref_index.to(device),
                camera_qt=qt.to(device, dtype),
                camera_qt_ref=qt_ref.to(device, dtype),
            )
    return _Conditioning(condition.to(device), prompt_embeds, negative_embeds,
                         float(request.guidance_scale) if use_cfg else 1.0, model_kwargs)


def _prepare_latents(request: _Request, cond: _Conditioning, device: torch.device) -> Tensor:
    """Initial noise x_T (1, 16, F, h, w) float32: the given ``latents``, else drawn on the CPU from
    ``request.seed`` (so the same seed gives the same noise on every device)."""
    if request.given.latents is not None:
        return request.given.latents.to(device)
    c = cond.condition
    shape = (1, c.shape[1] - 4, c.shape[2], c.shape[-2], c.shape[-1])
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def _sampler_steps(model: Any, request: _Request) -> Optional[int]:
    """Steps for the sampler: the request's (UniPC) or None = the distilled variant's fixed schedule."""
    if not model.is_distilled:
        return request.num_inference_steps
    if request.num_inference_steps != 50 or request.guidance_scale != 7.5:
        logger.warning("num_inference_steps / guidance_scale: ignored by the distilled variant %s "
                       "(fixed %d-step schedule, no guidance)", model.variant, model.config.dmd_steps)
    return None


def _denoise_latents(model: Any, latents: Tensor, cond: _Conditioning, steps: Optional[int],
                     progress_callback: Optional[Callable[[int, int, Tensor], None]]) -> Tuple[Tensor, int, int]:
    """Run the sampler; returns ``(final latents, steps run, transformer calls)``."""

    scheduler = model.make_scheduler()
    calls = _CallCounter(model.transformer)
    state = parallel_state(model)
    with torch.no_grad():
        latents = denoise(
            calls, latents, cond.condition, scheduler=scheduler, prompt_embeds=cond.prompt_embeds,
            negative_prompt_embeds=cond.negative_embeds, guidance_scale=cond.guidance_scale,
            num_inference_steps=steps, model_kwargs=cond.model_kwargs, progress_callback=progress_callback,
            cfg_parallel=state.cfg_parallel if state is not None else None,
        )
    steps_run = len(getattr(scheduler, "timesteps", [])) or (steps or 0)
    return latents, steps_run, calls.count


def _decode_frames(model: Any, latents: Tensor) -> Tensor:
    """Keyframe VAE decode: latents (B, 16, F, h, w) -> frames (B, F, 3, H, W) float32 in [0, 1] on the CPU.
    Under parallelism the frames are split over the group's ranks (:func:`~worldstereo.parallel.decode_split`)."""
    state = parallel_state(model)
    with torch.no_grad():
        latents = latents.to(model.dtype)
        if state is not None and state.group_size > 1:
            video = decode_split(model.decode_latents, latents, state)
        else:
            video = model.decode_latents(latents)
    return ((video.permute(0, 2, 1, 3, 4).float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).contiguous()


def _update_memory(model: Any, request: _Request, scene: _Scene, memory: SceneMemory, frames: Tensor) -> None:
    """Add the generated frames (F, 3, H, W) to the frame bank and (when it updates) the point cloud."""
    if memory.spatial is not None and request.use_spatial_memory:
        memory.spatial.update_from_clip(frames, scene.w2c, scene.K)
    if memory.geometric is not None and request.use_geometric_memory and not request.given.has_render:
        update_estimator = _frame_depth_estimator(model, scene.estimator)
        if update_estimator is not None:
            memory.geometric.maybe_update(frames, scene.w2c, scene.K, depth_estimator=update_estimator)
        elif memory.geometric.update_frequency == "auto":
            logger.info("geometric memory: not updated (the depth source is a fixed depth map of the condition "
                        "image; pass a depth model as depth_estimator= to grow the point cloud)")


def _make_record(model: Any, request: _Request, scene: _Scene, refs: Optional[_References],
                 cond: _Conditioning, steps_run: int, calls: int, timings: Dict[str, float]) -> GenerationRecord:
    record = GenerationRecord(
        variant=model.variant, steps=steps_run, transformer_calls=calls, guidance_scale=cond.guidance_scale,
        seed=request.seed, render_video=scene.render_video, render_mask=scene.hole_mask,
        render_depth=scene.render_depth, coverage=list(scene.coverage), median_depth=scene.median_depth,
        trajectory=scene.trajectory, timings=timings,
    )
    record.conditioning = _conditioning_sources(request, refs)
    if refs is not None:
        record.num_references = int(refs.ref_index.numel())
        record.ref_index = [int(i) for i in refs.ref_index]
        record.reference_names = list(refs.names)
    return record


def _conditioning_sources(request: _Request, refs: Optional[_References]) -> Dict[str, str]:
    """Where the render, the references (memory variants) and the initial noise came from."""
    given = request.given
    sources = {"render": "given" if given.has_render
               else ("geometric_memory" if request.use_geometric_memory else "none")}
    if refs is not None:
        sources["references"] = "given" if given.has_references \
            else ("retrieved" if request.use_spatial_memory else "condition_view")
    sources["latents"] = "given" if given.latents is not None else "seed"
    return sources


def _write_outputs(model: Any, request: _Request, frames: Tensor) -> VideoOutput:
    """Write ``save_path`` (atomically; under parallelism on the group's rank 0 only) and convert the
    frames to ``output_format``."""
    if request.save_path is not None and is_writer(model):

        write_video(request.save_path, frames, fps=16)
    return _format_output(frames, request.output_format)


@contextlib.contextmanager
def _timed(timings: Dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[stage]`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------- per-job and batched stages


@dataclass
class _Job:
    """One video between its per-job stages and the (possibly batched) model stages.

    Attributes:
        request, memory, scene, refs, cond: outputs of the per-job stages (batch 1).
        latents: initial noise (1, 16, F, h, w) float32 on the execution device.
        steps: sampler steps (None: the distilled variant's fixed schedule).
        timings: seconds per stage; key: the caller's key (:class:`BatchedGeneration`).
        steps_run, calls, batch_size: filled by the model stages.
    """

    request: _Request
    memory: SceneMemory
    scene: _Scene
    refs: Optional[_References]
    cond: _Conditioning
    latents: Tensor
    steps: Optional[int]
    timings: Dict[str, float]
    key: Any = None
    steps_run: int = 0
    calls: int = 0
    batch_size: int = 1


def _prepare_job(model: Any, request: _Request, memory: Optional[SceneMemory]) -> _Job:
    """The per-job stages: memory, geometry, references, conditioning and initial noise."""

    device = execution_device(model)
    timings: Dict[str, float] = {}
    with _timed(timings, "geometry"):
        memory = _prepare_memory(model, request, memory)
        scene = _prepare_geometry(model, request, memory)
    with _timed(timings, "references"):
        refs = _prepare_references(model, request, scene, memory)
    with _timed(timings, "conditioning"):
        cond = _encode_conditioning(model, request, scene, refs, device)
    with _timed(timings, "sampling"):
        latents = _prepare_latents(request, cond, device)
    return _Job(request, memory, scene, refs, cond, latents, _sampler_steps(model, request), timings)


#: transformer keywords shared by the whole batch (not batch-first): jobs must agree on them.
_SHARED_MODEL_KWARGS = ("ref_index",)


def _batch_key(job: _Job) -> Tuple[Any, ...]:
    """Jobs with equal keys can run through one batched forward: same latent shape (size, frames),
    sampler steps, guidance, conditioning shapes and (memory variants) reference count and ``ref_index``."""
    cond = job.cond
    shapes = []
    for name, value in sorted(cond.model_kwargs.items()):
        if name in _SHARED_MODEL_KWARGS:
            shapes.append((name, tuple(torch.as_tensor(value).cpu().tolist())))
        elif isinstance(value, Tensor):
            shapes.append((name, tuple(value.shape[1:]), value.dtype))
        else:
            shapes.append((name, repr(value)))
    return (tuple(job.latents.shape[1:]), tuple(cond.condition.shape[1:]), tuple(cond.prompt_embeds.shape[1:]),
            cond.negative_embeds is None, float(cond.guidance_scale), job.steps, tuple(shapes))


def _stack_conditioning(conds: Sequence[_Conditioning]) -> _Conditioning:
    """The conditioning of several compatible jobs stacked along the batch dimension."""
    if len(conds) == 1:
        return conds[0]
    first = conds[0]
    kwargs = {name: value if name in _SHARED_MODEL_KWARGS else torch.cat([c.model_kwargs[name] for c in conds])
              for name, value in first.model_kwargs.items()}
    negative = None if first.negative_embeds is None else torch.cat([c.negative_embeds for c in conds])  # type: ignore[misc]
    return _Conditioning(torch.cat([c.condition for c in conds]), torch.cat([c.prompt_embeds for c in conds]),
                         negative, first.guidance_scale, kwargs)


def _fan_out_progress(callbacks: Sequence[Optional[Callable[[int, int, Tensor], None]]]
                      ) -> Optional[Callable[[int, int, Tensor], None]]:
    """One sampler callback calling each job's own with its slice of the batched latents."""
    if all(cb is None for cb in callbacks):
        return None

    def callback(step: int, total: int, latents: Tensor) -> None:
        for i, cb in enumerate(callbacks):
            if cb is not None:
                cb(step, total, latents[i:i + 1])

    return callback


def _run_model_stages(model: Any, jobs: Sequence[_Job]) -> Tensor:
    """Denoise and decode compatible jobs as one batch; returns frames (B, F, 3, H, W) in [0, 1]."""
    cond = _stack_conditioning([j.cond for j in jobs])
    latents = torch.cat([j.latents for j in jobs])
    progress = _fan_out_progress([j.request.progress_callback for j in jobs])
    t0 = time.perf_counter()
    latents, steps_run, calls = _denoise_latents(model, latents, cond, jobs[0].steps, progress)
    t1 = time.perf_counter()
    frames = _decode_frames(model, latents)
    t2 = time.perf_counter()
    for job in jobs:
        job.timings["sampling"] = job.timings.get("sampling", 0.0) + t1 - t0
        job.timings["decode"] = t2 - t1
        job.steps_run, job.calls, job.batch_size = steps_run, calls, len(jobs)
    return frames


def _finish_job(model: Any, job: _Job, frames: Tensor) -> VideoOutput:
    """The per-job stages after decoding: memory update, record, outputs. ``frames`` (F, 3, H, W)."""
    with _timed(job.timings, "memory_update"):
        _update_memory(model, job.request, job.scene, job.memory, frames)
    record = _make_record(model, job.request, job.scene, job.refs, job.cond, job.steps_run, job.calls, job.timings)
    record.batch_size = job.batch_size
    job.memory.history.append(record)
    return _write_outputs(model, job.request, frames)
