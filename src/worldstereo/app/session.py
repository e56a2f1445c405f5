"""One browser session of ``worldstereo app``: scene, camera path, preview, generation and 3D.

Every action the interface offers is a method of :class:`AppSession` (no Gradio here, so each is
testable without a browser), and each is a thin layer over the library:

* **Scene** — :meth:`AppSession.load_scene` reads an uploaded photo or 2:1 panorama and, optionally,
  its depth file (:func:`worldstereo.depth.load_depth`), else estimates the depth with the app's depth
  model; :meth:`~AppSession.load_example` ray-casts the procedural room (:mod:`worldstereo.scenes`,
  exact depth). The point cloud is the condition view lifted at the generation size exactly as
  :func:`~worldstereo.generate_video` lifts it (:class:`~worldstereo.memory.GlobalGeometricMemory`
  with the model's settings; :func:`~worldstereo.geometry.panorama.lift_equirect_depth` for panoramas).
* **Camera path** — a preset (:meth:`CameraTrajectory.preset`, lengths in median depths), keyframes
  placed in the 3D view (:func:`~worldstereo.camera.interpolate_keyframes`, the first keyframe being
  the condition view), or an imported file (every format :func:`~worldstereo.commands.render.load_trajectory_file`
  reads); "Fit to scene" is :func:`~worldstereo.camera.fit_trajectory`; export writes every format
  the library writes.
* **Preview** — the render and hole mask of the point cloud along the path: the render the model
  is conditioned on (the same memory, renderer and settings as :func:`~worldstereo.generate_video`,
  which a test checks frame by frame), with per-frame coverage.
* **Generate** — :func:`~worldstereo.generate_multi_view` with one shared
  :class:`~worldstereo.SceneMemory` over the chosen paths; progress per denoising step; cancel.
* **3D** — :func:`~worldstereo.reconstruction.reconstruct` of the generated videos (their render
  depth, or a depth model per frame) and its exports, zipped for download.

Files: a session writes only inside its own temporary folder (:attr:`AppSession.workdir`, removed by
:meth:`AppSession.close`), each result folder through the transactional
:func:`~worldstereo.io.output_folder.output_folder` and each file atomically. It reads only files it
is handed by the web framework's upload handling (paths in its upload cache) and its own files —
never a path typed by a user.
"""

from __future__ import annotations

import inspect
import logging
import math
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worldstereo import __version__
from worldstereo.camera import (
    PRESET_NAMES,
    CameraTrajectory,
    assign_scale,
    fit_trajectory,
    interpolate_keyframes,
    intrinsics_from_fov,
    trajectory_subsample_linspace,
)
from worldstereo.commands.generate import write_memory_outputs, write_summary, write_video_outputs
from worldstereo.commands.render import load_trajectory_file
from worldstereo.depth import UserDepth, load_depth
from worldstereo.geometry.coverage import render_coverage
from worldstereo.geometry.panorama import equirect_to_perspective, lift_equirect_depth
from worldstereo.io.atomic import atomic_open, atomic_write
from worldstereo.io.files import read_json_file
from worldstereo.io.image import load_image, resize_image, save_image
from worldstereo.io.output_folder import output_folder
from worldstereo.io.video import write_video
from worldstereo.reconstruction import METHODS, reconstruct
from worldstereo.scenes import make_room_scene

from .model import AppModels

__all__ = [
    "APP_MAX_FRAMES",
    "APP_MAX_SIDE",
    "EXAMPLES",
    "PATH_MODES",
    "PRESET_PARAMETER_RANGES",
    "AppSession",
    "GenerationCancelled",
    "GenerationResult",
    "Preview",
    "ReconstructionResult",
    "Scene",
    "preset_parameters",
]

logger = logging.getLogger(__name__)

#: most frames of a camera path (the reference models use 21 keyframes; 81-pose files are subsampled)
APP_MAX_FRAMES = 121
#: largest generation height or width in pixels
APP_MAX_SIDE = 1280
#: uploaded images are shrunk to this longest side first (the models work at about 480 x 832)
MAX_SOURCE_SIDE = 2048
#: larger panoramas are shrunk to this size (height, width) first; smaller ones are lifted as they are, like
#: generate_video does (a panorama's points should be about as dense as the pixels of the views rendered from it:
#: 4096 columns give 0.09 degrees per point, an 832-pixel-wide 60-degree view 0.07 degrees per pixel)
PANORAMA_SIZE = (2048, 4096)
#: ways to define the camera path
PATH_MODES = ("preset", "keyframes", "file")
#: bundled examples: name -> procedural room seed (exact depth, no download)
EXAMPLES: dict[str, int] = {"Procedural room (seed 0)": 0, "Procedural room (seed 1)": 1,
                            "Procedural room (seed 2)": 2}
#: size and field of view of the example images
EXAMPLE_SIZE = (384, 512)
EXAMPLE_FOV = 70.0
#: field of view of a photo whose depth source gives none (the library's default)
DEFAULT_FOV = 60.0
#: slider ranges of the preset parameters (lengths in median depths, angles in degrees)
PRESET_PARAMETER_RANGES: dict[str, tuple[float, float, float]] = {
    "distance": (-3.0, 3.0, 0.05),
    "angle_deg": (-180.0, 180.0, 1.0),
    "factor": (0.25, 4.0, 0.05),
    "azimuth_deg": (-180.0, 180.0, 1.0),
    "elevation_deg": (-80.0, 80.0, 1.0),
    "depth": (0.1, 5.0, 0.05),
    "subject_depth": (0.1, 5.0, 0.05),
    "radius": (0.0, 2.0, 0.01),
    "revolutions": (0.25, 4.0, 0.25),
    "forward": (-2.0, 2.0, 0.05),
    "focus_depth": (0.1, 5.0, 0.05),
    "radius_x": (0.0, 2.0, 0.01),
    "radius_y": (0.0, 2.0, 0.01),
}
#: the colour of the hole pixels in the render video (as the pipeline and `worldstereo render`)
HOLE_GREY = 0.5

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, desc: str) -> None:
    return None


class GenerationCancelled(RuntimeError):
    """The user pressed Cancel during a generation."""


def preset_parameters(name: str) -> dict[str, float]:
    """The keyword parameters of preset ``name`` other than sizes and frame count, with their defaults
    (lengths in median depths, angles in degrees).

    Raises:
        ValueError: unknown preset.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"preset: unknown camera preset {name!r}; expected one of {list(PRESET_NAMES)}")
    params = inspect.signature(getattr(CameraTrajectory, name)).parameters
    return {k: float(p.default) for k, p in params.items()
            if k not in ("num_frames", "height", "width", "fov_deg") and p.default is not inspect.Parameter.empty}


@dataclass
class Scene:
    """A loaded scene.

    Attributes:
        name: what was loaded (file name or example).
        source: (3, Hs, Ws) float in [0, 1]: the image generation is given (a photo shrunk to at most
            :data:`MAX_SOURCE_SIDE`, a panorama to at most :data:`PANORAMA_SIZE`).
        depth: (Hs, Ws) z-depth (range for panoramas) in scene units, 0 = invalid.
        valid: (Hs, Ws) bool.
        depth_source: where the depth came from, for the interface.
        estimator: the depth model for generated frames (None for a depth file or an example).
        panorama: whether ``source`` is a 2:1 equirectangular panorama.
        median_depth: median of the valid depth (the unit of the presets).
        fov_deg: suggested horizontal field of view (the depth model's, the example's, else 60).
    """

    name: str
    source: Tensor
    depth: Tensor
    valid: Tensor
    depth_source: str
    estimator: Any
    panorama: bool
    median_depth: float
    fov_deg: float
    key: str = ""


@dataclass
class PathSpec:
    """The camera path settings: ``mode`` (:data:`PATH_MODES`), the preset and its parameters,
    frame count and horizontal field of view."""

    mode: str = "preset"
    preset: str = "orbit"
    params: dict[str, float] = field(default_factory=dict)
    num_frames: int = 21
    fov_deg: float = DEFAULT_FOV


@dataclass
class Preview:
    """The render along the path: ``render`` (F,3,H,W) [0,1] (holes grey, frame 0 the condition
    view), ``hole_mask`` (F,1,H,W) 1 = hole, per-frame ``coverage``, the videos written and seconds."""

    trajectory: CameraTrajectory
    render: Tensor
    hole_mask: Tensor
    coverage: list[float]
    render_path: Path
    mask_path: Path
    seconds: float


@dataclass
class GenerationResult:
    """The generated videos (each (F,3,H,W) [0,1]), their records, and the output folder."""

    videos: list[Tensor]
    records: list[Any]
    folder: Path
    video_paths: list[Path]
    render_paths: list[Path]
    seconds: float
    memory: Any = None


@dataclass
class ReconstructionResult:
    """The reconstruction, its export folder and the files written."""

    reconstruction: Any
    folder: Path
    files: dict[str, Path]
    seconds: float


class AppSession:
    """The state of one browser session and its actions.

    Args:
        models: the app's shared :class:`~worldstereo.app.model.AppModels`.
        scale_map: generation sizes to choose from by aspect ratio (the checkpoint's; default the
            reference's, :func:`~worldstereo.camera.assign_scale`).
        default_frames: frames of a new path (the checkpoint's ``nframe``, else 21).
        max_frames: most frames of a path.
        workdir: the session folder (default: a new temporary folder).
    """

    def __init__(self, models: AppModels | None = None, *, scale_map: list[list[int]] | None = None,
                 default_frames: int = 21, max_frames: int = APP_MAX_FRAMES, workdir: str | Path | None = None) -> None:
        if not 1 <= int(max_frames) <= 10_000:
            raise ValueError(f"max_frames: expected an integer in [1, 10000], got {max_frames!r}")
        self.models = models or AppModels()
        self.scale_map = scale_map
        self.max_frames = int(max_frames)
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="worldstereo-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scene: Scene | None = None
        self.height, self.width = 480, 832
        self.path = PathSpec(num_frames=min(int(default_frames), self.max_frames),
                             params=preset_parameters("orbit"))
        self.keyframes: list[Tensor] = []
        self.imported: CameraTrajectory | None = None
        self.imported_name = ""
        self.fit_scale: float | None = None
        self.views: list[CameraTrajectory] = []
        self.preview: Preview | None = None
        self.generation: GenerationResult | None = None
        self.reconstruction: ReconstructionResult | None = None
        self.cancel_event = threading.Event()
        self._geometry: tuple[tuple, Any] | None = None
        self._counter = 0

    # ------------------------------------------------------------------------------ lifecycle
    def __deepcopy__(self, memo: dict) -> AppSession:
        """A session is a handle on its folder, its cancel flag and the shared models: a copy is the
        same session (the web framework deep-copies state values)."""
        return self

    def close(self) -> None:
        """Delete the session folder (called when the browser session ends)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _invalidate(self, *, path: bool = True) -> None:
        """Forget what depends on the path (or, with ``path=False``, only on the geometry)."""
        self.preview = None
        if path:
            self.fit_scale = None

    # ---------------------------------------------------------------------------------- scene
    def load_scene(self, image_path: str | Path, depth_path: str | Path | None = None, *,
                   depth_scale: float | None = None, progress: Progress = _no_progress) -> Scene:
        """Load an uploaded photo or 2:1 panorama (``image_path``) with its depth file, if any
        (``.npy`` / ``.npz`` float z-depth, or 16-bit ``.png`` in millimetres; same size as the image),
        else the depth model's estimate.

        Raises:
            ValueError / worldstereo.io.errors.InputFileError: an unreadable or invalid file, a depth
                map of another size.
            worldstereo.depth.hub.DepthModelUnavailableError: no depth file and the depth model is
                neither cached nor downloadable (the message says how to go on).
        """
        progress(0.05, "reading the image")
        image = load_image(Path(image_path), name="image")
        name = Path(image_path).name
        depth = None
        if depth_path is not None:
            depth = load_depth(Path(depth_path), depth_scale, name="depth file")
            if tuple(depth.shape) != tuple(image.shape[-2:]):
                raise ValueError(f"depth file: its size {tuple(depth.shape)} does not match the image's "
                                 f"{tuple(image.shape[-2:])} (height, width)")
            if not bool((depth > 0).any()):
                raise ValueError("depth file: no valid (positive) depth")
        elif depth_scale is not None:
            raise ValueError("depth scale: only applies with a depth file")
        return self._set_scene(name, image, depth, depth_source="depth file" if depth is not None else None,
                               progress=progress)

    def load_example(self, name: str, *, progress: Progress = _no_progress) -> Scene:
        """Load a bundled example (:data:`EXAMPLES`): the procedural room with its exact depth."""
        if name not in EXAMPLES:
            raise ValueError(f"example: unknown {name!r}; expected one of {list(EXAMPLES)}")
        progress(0.1, "ray-casting the procedural room")
        h, w = EXAMPLE_SIZE
        K = intrinsics_from_fov(h, w, EXAMPLE_FOV)
        image, depth = make_room_scene(seed=EXAMPLES[name]).render(torch.eye(4), K, h, w, supersample=2)
        return self._set_scene(name, image, depth, depth_source="exact (procedural room)", fov_deg=EXAMPLE_FOV,
                               progress=progress)

    def _set_scene(self, name: str, image: Tensor, depth: Tensor | None, *, depth_source: str | None,
                   fov_deg: float | None = None, progress: Progress = _no_progress) -> Scene:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        panorama = w == 2 * h  # the pipeline's rule (panorama=None: auto)
        target = PANORAMA_SIZE if panorama else None
        if not panorama and max(h, w) > MAX_SOURCE_SIDE:
            s = MAX_SOURCE_SIDE / max(h, w)
            target = (max(1, round(h * s)), max(1, round(w * s)))
        if target is not None and (h, w) != target and (h > target[0] or w > target[1]):
            image = resize_image(image, *target)
            if depth is not None:
                depth = resize_image(depth[None].float(), *target, mode="nearest")[0]
        estimator = None
        K = None
        if depth is None:
            progress(0.2, "estimating depth (the depth model is loaded the first time)")
            estimator = self.models.depth_estimator()
            pred = estimator(image)
            depth, valid = pred.depth.float().cpu(), pred.valid_mask.bool().cpu()
            K = pred.K
            depth_source = getattr(estimator, "model_name", type(estimator).__name__)
        else:
            depth = depth.float().cpu()
            valid = depth > 0
        if not bool(valid.any()):
            raise ValueError("depth: no valid depth in this image")
        median = float(depth[valid].median())
        if fov_deg is None:
            fov_deg = DEFAULT_FOV
            if K is not None and not panorama:
                fov_deg = math.degrees(2 * math.atan(0.5 * image.shape[-1] / float(K[0, 0])))
        self._counter += 1
        self.scene = Scene(name=name, source=image.float().clamp(0, 1), depth=depth, valid=valid,
                           depth_source=str(depth_source), estimator=estimator, panorama=panorama,
                           median_depth=median, fov_deg=float(fov_deg), key=f"{self._counter}-{name}")
        self.height, self.width = assign_scale(h, w, self.scale_map)
        self.path.fov_deg = float(fov_deg)
        self.keyframes, self.imported, self.imported_name, self.views = [], None, "", []
        self.generation = self.reconstruction = None
        self._geometry = None
        self._invalidate()
        progress(0.9, "lifting the point cloud")
        self.memory_geometry()
        return self.scene

    def require_scene(self) -> Scene:
        if self.scene is None:
            raise ValueError("scene: load an image or an example first")
        return self.scene

    def set_size(self, height: int, width: int) -> None:
        """Set the generation (and preview) size: multiples of 16 up to :data:`APP_MAX_SIDE`."""
        for label, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not float(v).is_integer() or not 16 <= int(v) <= APP_MAX_SIDE or int(v) % 16:
                raise ValueError(f"{label}: expected a multiple of 16 in [16, {APP_MAX_SIDE}], got {v!r}")
        if (int(height), int(width)) != (self.height, self.width):
            self.height, self.width = int(height), int(width)
            self._invalidate(path=False)

    def condition_K(self) -> Tensor:
        """(3, 3) float64 intrinsics of the condition view at the generation size (horizontal field
        of view :attr:`PathSpec.fov_deg`)."""
        return intrinsics_from_fov(self.height, self.width, self.path.fov_deg, dtype=torch.float64)

    def condition_view(self) -> Tensor:
        """(3, H, W) frame 0 at the generation size, as the pipeline makes it (the image resized, or
        the panorama's perspective crop through the condition camera)."""
        scene = self.require_scene()
        if scene.panorama:
            return equirect_to_perspective(scene.source, torch.eye(4), self.condition_K().float(), self.height,
                                           self.width).clamp(0, 1)
        return resize_image(scene.source, self.height, self.width).clamp(0, 1)

    def memory_geometry(self) -> Any:
        """The :class:`~worldstereo.memory.GlobalGeometricMemory` the pipeline builds for this scene at
        the generation size, with the model's settings (cached until the scene, size or field of
        view changes)."""
        from worldstereo.memory import GlobalGeometricMemory  # lazy: scipy

        scene = self.require_scene()
        config = self.models.global_memory_config()
        key = (scene.key, self.height, self.width, round(self.path.fov_deg, 6), tuple(sorted(config.items())))
        if self._geometry is not None and self._geometry[0] == key:
            return self._geometry[1]
        memory = GlobalGeometricMemory(**config)
        image = self.condition_view()
        if scene.panorama:
            memory.from_point_cloud(lift_equirect_depth(scene.depth, scene.source, valid_mask=scene.valid),
                                    condition_image=image)
        else:
            depth = resize_image(scene.depth[None], self.height, self.width, mode="nearest")[0]
            valid = resize_image(scene.valid[None].float(), self.height, self.width, mode="nearest")[0] > 0.5
            memory.initialize(image, depth * valid, self.condition_K(), torch.eye(4, dtype=torch.float64),
                              valid_mask=valid)
        if memory.is_empty:
            raise ValueError("depth: no point is left after lifting the depth (all invalid or depth edges)")
        self._geometry = (key, memory)
        return memory

    # ---------------------------------------------------------------------------- camera path
    def set_path(self, *, mode: str | None = None, preset: str | None = None,
                 params: dict[str, float] | None = None, num_frames: int | None = None,
                 fov_deg: float | None = None) -> None:
        """Change the path settings (any subset). A new preset starts from its default parameters."""
        if mode is not None:
            if mode not in PATH_MODES:
                raise ValueError(f"mode: expected one of {PATH_MODES}, got {mode!r}")
            if mode == "file" and self.imported is None:
                raise ValueError("trajectory file: import a file first")
            self.path.mode = mode
        if preset is not None and preset != self.path.preset:
            self.path.params = preset_parameters(preset)
            self.path.preset = preset
        if params is not None:
            allowed = preset_parameters(self.path.preset)
            for k, v in params.items():
                if k not in allowed:
                    raise ValueError(f"preset {self.path.preset!r}: no parameter {k!r}; it has {sorted(allowed)}")
                if not math.isfinite(float(v)):
                    raise ValueError(f"{k}: expected a finite number, got {v!r}")
                self.path.params[k] = float(v)
        if num_frames is not None:
            if isinstance(num_frames, bool) or not float(num_frames).is_integer() or \
                    not 2 <= int(num_frames) <= self.max_frames:
                raise ValueError(f"frames: expected an integer in [2, {self.max_frames}], got {num_frames!r}")
            self.path.num_frames = int(num_frames)
        if fov_deg is not None:
            if not (math.isfinite(float(fov_deg)) and 1.0 <= float(fov_deg) <= 170.0):
                raise ValueError(f"field of view: expected degrees in [1, 170], got {fov_deg!r}")
            self.path.fov_deg = float(fov_deg)
        self._invalidate()

    def trajectory(self) -> CameraTrajectory:
        """The current camera path in scene units with intrinsics at the generation size (frame 0 =
        the condition view), after "Fit to scene" when it was pressed.

        Raises:
            ValueError: no scene, or a preset that rejects its parameters.
        """
        scene = self.require_scene()
        n, h, w, fov = self.path.num_frames, self.height, self.width, self.path.fov_deg
        if self.path.mode == "keyframes":
            poses = torch.stack([torch.eye(4, dtype=torch.float64), *self.keyframes])
            keys = CameraTrajectory(poses, self.condition_K(), h, w, fov_intrinsics=True)
            traj = interpolate_keyframes(keys, n)
        elif self.path.mode == "file":
            if self.imported is None:
                raise ValueError("trajectory file: import a file first")
            traj = self._fit_frames(self.imported, n).at_size(h, w)
        else:
            try:
                traj = CameraTrajectory.preset(self.path.preset, num_frames=n, height=h, width=w, fov_deg=fov,
                                               **self.path.params)
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise ValueError(f"preset {self.path.preset!r}: {' '.join(str(exc).split())}") from None
            traj = traj.in_scene_units(scene.median_depth)
        if self.fit_scale is not None:
            traj = traj.scaled(self.fit_scale)
        return traj

    @staticmethod
    def _fit_frames(traj: CameraTrajectory, n: int) -> CameraTrajectory:
        """``traj`` with ``n`` cameras: subsampled with the reference's rule, or interpolated."""
        if len(traj) > n:
            return traj[trajectory_subsample_linspace(len(traj), n)]
        if len(traj) < n:
            return traj.resample(n)
        return traj

    def add_keyframe(self, w2c: Tensor) -> int:
        """Add the view camera ``w2c`` (4, 4) (world-to-camera, scene units) as the next keyframe and
        switch to keyframe mode; returns the number of keyframes after the condition view."""
        self.require_scene()
        w2c = torch.as_tensor(w2c, dtype=torch.float64)
        CameraTrajectory(w2c)  # validates (rigid, finite)
        if len(self.keyframes) + 2 > self.max_frames:
            raise ValueError(f"keyframes: at most {self.max_frames - 1} (the frame limit)")
        self.keyframes.append(w2c.clone())
        self.path.mode = "keyframes"
        self.path.num_frames = max(self.path.num_frames, len(self.keyframes) + 1)
        self._invalidate()
        return len(self.keyframes)

    def remove_last_keyframe(self) -> int:
        if self.keyframes:
            self.keyframes.pop()
            self._invalidate()
        return len(self.keyframes)

    def clear_keyframes(self) -> None:
        self.keyframes = []
        if self.path.mode == "keyframes":
            self.path.mode = "preset"
        self._invalidate()

    def import_trajectory(self, path: str | Path) -> CameraTrajectory:
        """Import an uploaded trajectory file (ours ``.json``, a reference ``camera.json``, a nerfstudio
        ``transforms.json``, ``.npz`` or a RealEstate10K ``.txt``) and switch to file mode. The
        cameras are re-expressed relative to the first one (the condition view); files saved in
        median depths are scaled by the scene's; files without intrinsics get the field of view."""
        scene = self.require_scene()
        p = Path(path)
        # intrinsics in pixels of: the size the file states (ours, camera.json with width/height), else the image
        image_size: tuple[int, int] | None = (int(scene.source.shape[-2]), int(scene.source.shape[-1]))
        if p.suffix.lower() == ".json":
            doc = read_json_file(p, "trajectory file", "trajectory JSON file")
            if isinstance(doc, dict) and "width" in doc and "height" in doc:
                image_size = None
        traj = load_trajectory_file(p, image_size=image_size, option="trajectory file")
        if len(traj) > 100_000:
            raise ValueError(f"trajectory file: {len(traj)} cameras; at most 100000")
        traj = traj.relative_to(0).in_scene_units(scene.median_depth)
        if not traj.has_intrinsics:
            traj = traj.with_intrinsics(height=self.height, width=self.width, fov_deg=self.path.fov_deg)
        self.imported, self.imported_name = traj, p.name
        self.path.mode = "file"
        self.path.num_frames = min(max(len(traj), 2), self.max_frames)
        self._invalidate()
        return traj

    def fit(self, min_coverage: float = 0.5) -> tuple[float, list[float], bool]:
        """"Fit to scene": scale the path's motion so that the render covers at least
        ``min_coverage`` of every frame (:func:`~worldstereo.camera.fit_trajectory`, with the
        renderer settings generation uses). Returns ``(scale, coverage, reached)``."""
        if not (isinstance(min_coverage, (int, float)) and 0 < float(min_coverage) <= 1):
            raise ValueError(f"min coverage: expected a share in (0, 1], got {min_coverage!r}")
        self.fit_scale = None
        base = self.trajectory()
        memory = self.memory_geometry()
        result = fit_trajectory(base, memory.points, min_coverage=float(min_coverage),
                                point_radius=memory.point_radius, points_per_pixel=memory.points_per_pixel)
        self.fit_scale = float(result.scale) if result.scale != 1.0 else None
        self.preview = None
        return float(result.scale), list(result.coverage), bool(result.reached)

    def export_trajectory(self) -> list[Path]:
        """Write the current path in every format the library writes (our JSON, the reference
        ``camera.json``, nerfstudio ``transforms.json``, RealEstate10K ``.txt``, ``.npz``) into the
        session folder; returns the files."""
        traj = self.trajectory()
        folder = self._folder("trajectory")
        files = [folder / "trajectory.json", folder / "camera.json", folder / "transforms.json",
                 folder / "realestate10k.txt", folder / "trajectory.npz"]
        traj.save(files[0])
        traj.to_reference_json(files[1])
        traj.to_transforms_json(files[2])
        traj.to_realestate10k(files[3])
        traj.to_npz(files[4])
        return files

    def add_view(self) -> int:
        """Add the current path to the set generated together (shared memory); returns the set size."""
        traj = self.trajectory()
        if self.views and len(traj) != len(self.views[0]):
            raise ValueError(f"views: every path of the set needs the same frame count ({len(self.views[0])}), "
                             f"this one has {len(traj)}")
        if self.views and (self.views[0].height, self.views[0].width) != (traj.height, traj.width):
            raise ValueError("views: the generation size changed; clear the set first")
        self.views.append(traj)
        return len(self.views)

    def clear_views(self) -> None:
        self.views = []

    # -------------------------------------------------------------------------------- preview
    def render_preview(self, *, progress: Progress = _no_progress, fps: int = 16) -> Preview:
        """Render the point cloud along the path (the ControlNet inputs of generation) and write
        ``preview/render.mp4`` and ``preview/render_mask.mp4`` (white = hole)."""
        t0 = time.perf_counter()
        traj = self.trajectory()
        memory = self.memory_geometry()
        image = self.condition_view()
        w2c, K = traj.w2c.float(), traj.K.float()
        progress(0.1, f"rendering {len(traj)} frames at {self.width}x{self.height}")
        r = memory.render(w2c, K, self.height, self.width, condition_image=image)  # as generate_video renders
        hole = r.hole_mask.float().clamp(0, 1)
        video = torch.where(hole > 0.5, torch.full_like(r.video, HOLE_GREY), r.video)
        video[0] = image
        hole[0] = 0.0
        coverage = render_coverage(hole)
        progress(0.92, "writing the preview videos")
        folder = self._folder("preview")
        render_path = write_video(folder / "render.mp4", video.clamp(0, 1), fps=fps)
        mask_path = write_video(folder / "render_mask.mp4", hole.expand(-1, 3, -1, -1), fps=fps)
        self.preview = Preview(traj, video, hole, coverage, render_path, mask_path, time.perf_counter() - t0)
        return self.preview

    # ------------------------------------------------------------------------------- generate
    def generate(self, *, prompt: str = "", negative_prompt: str | None = None, seed: int = 0,
                 steps: int | None = None, guidance: float | None = None, fps: int = 16,
                 progress: Progress = _no_progress) -> GenerationResult:
        """Generate one video per path of the set (the current path when the set is empty) with one
        shared :class:`~worldstereo.SceneMemory`, and write them like ``worldstereo generate`` /
        ``multi-view`` into ``generation/``.

        Raises:
            GenerationCancelled: Cancel was pressed (checked after every denoising step).
            RuntimeError: no checkpoint.
        """
        from worldstereo.pipeline import SceneMemory, generate_multi_view  # lazy: diffusers

        scene = self.require_scene()
        trajectories = list(self.views) or [self.trajectory()]
        if not (isinstance(seed, int) and 0 <= seed < 2**63):
            raise ValueError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
        self.cancel_event.clear()
        t0 = time.perf_counter()
        with self.models.gpu_lock:
            progress(0.0, "loading the checkpoint (first generation only)" if not self.models.loaded else "starting")
            model = self.models.model()
            if steps is None:
                steps = 50 if model.is_distilled else 40  # the reference's 40 steps (the distilled variant ignores it)
            if guidance is None:
                guidance = 7.5 if model.is_distilled else 5.0
            total_videos = len(trajectories)
            state = {"video": 0, "last": 0}

            def on_step(step: int, total: int, latent: Tensor) -> None:
                if step <= state["last"]:  # the next video started
                    state["video"] += 1
                state["last"] = step
                progress((state["video"] * total + step) / (total_videos * total),
                         f"video {state['video'] + 1}/{total_videos}: denoising step {step}/{total}")
                if self.cancel_event.is_set():
                    raise GenerationCancelled(f"cancelled at step {step}/{total} of video {state['video'] + 1}")

            memory = SceneMemory()
            depth = scene.estimator
            if depth is None:
                depth = UserDepth(scene.depth)
            videos = generate_multi_view(
                model, scene.source, trajectories, shared_memory=True, memory=memory,
                num_frames=len(trajectories[0]), height=self.height, width=self.width,
                num_inference_steps=int(steps), guidance_scale=float(guidance), seed=seed, prompt=prompt,
                negative_prompt=negative_prompt or None, depth_estimator=depth, panorama=scene.panorama,
                progress_callback=on_step, output_format="tensor")
        progress(0.97, "writing the videos")
        with output_folder(self.workdir / "generation", owner="app-generate", option="generation") as staged:
            video_paths, render_paths = self._write_generation(staged.path, videos, memory, trajectories, fps=fps,
                                                               prompt=prompt, seed=seed, steps=int(steps),
                                                               guidance=float(guidance))
        final = self.workdir / "generation"
        self.generation = GenerationResult(
            videos=[v.cpu() for v in videos], records=list(memory.history), folder=final,
            video_paths=[final / p.name for p in video_paths], render_paths=[final / p.name for p in render_paths],
            seconds=time.perf_counter() - t0, memory=memory)
        self.reconstruction = None
        return self.generation

    def _write_generation(self, out: Path, videos: list[Tensor], memory: Any, trajectories: list[CameraTrajectory],
                          *, fps: int, prompt: str, seed: int, steps: int, guidance: float) -> tuple[list[Path], list[Path]]:
        scene = self.require_scene()
        multi = len(videos) > 1
        video_paths, render_paths, per_video = [], [], []
        for i, (frames, record) in enumerate(zip(videos, memory.history)):
            suffix = f"_{i:02d}" if multi else ""
            files = write_video_outputs(out, suffix, frames, record, record.trajectory, fps=fps)
            video_paths.append(out / files["video"])
            render_paths.append(out / files["render"])
            per_video.append({**record.summary(), "files": files})
        save_image(out / "image.png", self.condition_view())
        info = write_memory_outputs(out, memory)
        write_summary(out, {
            "worldstereo_version": __version__, "app": True, "model": self.models.spec.path,
            "memory_tier": self.models.memory_tier, "image": scene.name, "depth": scene.depth_source,
            "median_depth": scene.median_depth, "height": self.height, "width": self.width, "prompt": prompt,
            "seed": seed, "steps": steps, "guidance": guidance, "panorama": scene.panorama,
            "num_videos": len(videos), "num_points": info["num_points"], "memory_bank_size": info["memory_bank_size"],
            "videos": per_video,
        })
        return video_paths, render_paths

    def request_cancel(self) -> None:
        """Ask a running generation to stop after its current denoising step."""
        self.cancel_event.set()

    # -------------------------------------------------------------------------------------- 3D
    def reconstruct(self, method: str = "point_cloud", *, depth: str = "render", field_iterations: int = 300,
                    progress: Progress = _no_progress) -> ReconstructionResult:
        """Reconstruct the generated videos (all of them, in one world frame) with ``method``
        (``point_cloud``, ``mesh`` or ``neural_field``) and write the exports (PLY, GLB for a mesh,
        3DGS PLY for a neural field, COLMAP, transforms.json, WorldMirror, viewer.html, metrics.json)
        into ``reconstruction/``.

        Args:
            depth: ``"render"`` — the depth of the point-cloud render of each frame (no model, as
                ``worldstereo reconstruct`` of a generation folder) — or ``"model"`` — every frame's
                depth estimated with the app's depth model.
        """
        import json

        if method not in METHODS:
            raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
        if depth not in ("render", "model"):
            raise ValueError(f"depth: expected 'render' or 'model', got {depth!r}")
        if not isinstance(field_iterations, int) or not 1 <= field_iterations <= 100_000:
            raise ValueError(f"field iterations: expected an integer in [1, 100000], got {field_iterations!r}")
        gen = self.generation
        if gen is None:
            raise ValueError("3D: generate a video first")
        t0 = time.perf_counter()
        progress(0.05, "reconstructing")
        frames = torch.cat([v.float() for v in gen.videos])
        cameras = CameraTrajectory.cat([r.trajectory for r in gen.records])
        if depth == "render":
            if any(r.render_depth is None for r in gen.records):
                raise ValueError("3D: the videos have no render depth; choose the depth model")
            depth_source: Any = torch.cat([r.render_depth[:, 0].float().cpu() for r in gen.records])
        else:
            depth_source = self.models.depth_estimator()
        rec = reconstruct(frames, cameras, method, depth_source, field_iterations=field_iterations, progress=True)
        progress(0.9, "writing the exports")
        with output_folder(self.workdir / "reconstruction", owner="app-reconstruct", option="reconstruction") as staged:
            written = rec.save(staged.path, frames=frames)
            with atomic_open(staged.path / "metrics.json", "w", encoding="utf-8") as fh:
                json.dump({k: (v if math.isfinite(v) else None) for k, v in rec.quality_metrics.items()}, fh, indent=2)
        final = self.workdir / "reconstruction"
        files = {k: final / Path(p).relative_to(staged.path) for k, p in written.items()}
        files["metrics"] = final / "metrics.json"
        self.reconstruction = ReconstructionResult(rec, final, files, time.perf_counter() - t0)
        return self.reconstruction

    def download_zip(self) -> Path:
        """Zip the session's results (``generation/``, ``reconstruction/``, the preview and the
        trajectory exports) into ``worldstereo-result.zip`` in the session folder, atomically."""
        if self.reconstruction is None and self.generation is None:
            raise ValueError("download: nothing to download yet (generate, then reconstruct)")
        if self.scene is not None:
            self.export_trajectory()
        target = self.workdir / "worldstereo-result.zip"
        with atomic_write(target) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in ("generation", "reconstruction", "preview", "trajectory"):
                    folder = self.workdir / name
                    if not folder.is_dir():
                        continue
                    for path in sorted(folder.rglob("*")):
                        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                            zf.write(path, arcname=f"worldstereo-result/{path.relative_to(self.workdir).as_posix()}")
        return target
