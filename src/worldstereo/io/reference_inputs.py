"""Readers of input folders in the reference implementation's example layout.

Three kinds of folder (``examples/`` of FuchengSu/WorldStereo; reference-implementation.md §3.2,
§4.1, §5.2-5.4), recognised by their content:

* ``"images"`` — single-image camera control: ``image.png``, ``prompt.json`` (``"long caption"`` is
  the prompt), ``camera.json`` (e.g. 81 poses; subsampled to the model's ``nframe`` keyframes with
  ``np.linspace``, :func:`~worldstereo.camera.trajectory_subsample_linspace`). No render: it is made
  from the depth of ``image.png``.
* ``"reconstruction"`` — ``image.png``, ``prompt.json`` (``"prompt"``) and
  ``renders/traj_{eloop,up,right,left}/`` with ``camera.json``, ``render.mp4`` and
  ``render_mask.mp4``; generated in the reference order eloop -> up -> right -> left with one
  shared frame bank that starts with ``image.png`` at the identity camera (K = ``traj_eloop``'s
  first intrinsic), as the reference's ``SimpleMemoryBank``.
* ``"panorama"`` — ``pano_bank/images/*.png`` + ``pano_bank/cameras.json`` (the initial frame
  bank) and trajectory folders ``<view>/<traj>/`` (``camera.json``, ``render.mp4``,
  ``render_mask.mp4``, ``traj_caption.json``) with ``<view>/start_frame.png``; generated in the
  reference's ``sort_trajs`` order: for every ``view*`` (skipping views whose
  ``valid_analysis.json`` says ``"valid" != "yes"``) traj2 -> traj0 -> traj1, then ``target*/traj*``,
  ``reconstruct*/traj0``, ``wonder*/traj*`` and last ``reconstruct*/traj1`` (iterative: its
  condition image is the last frame generated for ``reconstruct*/traj0`` and its mask frame 0 is
  cleared). View names with ``-`` are used with ``_`` (the reference renames those folders; we
  only rename in memory).

Conventions: cameras world-to-camera OpenCV, intrinsics in pixels of the condition image FILE (as
the reference, whatever the ``width``/``height`` keys say); videos float ``(T, C, H, W)`` in [0, 1];
masks 1 = hole.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torch import Tensor

from ..camera.formats import read_reference_json
from .errors import InputFileError, reading
from .files import read_json_file
from .image import load_image, open_image_file
from .video import read_video
from worldstereo.errors import MissingPathError, PathKindError

__all__ = [
    "INPUT_KINDS",
    "RECONSTRUCTION_ORDER",
    "TrajectoryInputs",
    "ReferenceInputs",
    "detect_input_kind",
    "read_reference_inputs",
    "read_prompt",
    "read_condition_image",
    "image_size",
    "read_trajectory_camera",
    "read_render",
    "read_pano_bank",
]

logger = logging.getLogger(__name__)

INPUT_KINDS = ("images", "reconstruction", "panorama")
#: generation order of the reconstruction kind (reference ``recon_sort_trajs``)
RECONSTRUCTION_ORDER = ("traj_eloop", "traj_up", "traj_right", "traj_left")
#: trajectories of a ``view*`` folder, in the reference's order
_VIEW_ORDER = ("traj2", "traj0", "traj1")


@dataclass
class TrajectoryInputs:
    """One trajectory folder of a multi-trajectory input.

    Attributes:
        view_id, traj_id: the reference's names (``"renders"`` / ``"traj_eloop"``, ``"view0"`` /
            ``"traj2"``), used for the frame-bank names ``<view_id>/<traj_id>/<frame>`` and the
            panorama retrieval shortcuts; ``view_id`` has ``-`` replaced by ``_``.
        folder: the trajectory folder.
        camera, render, render_mask: its ``camera.json``, ``render.mp4``, ``render_mask.mp4``.
        prompt: its caption.
        prompt_file: the file the caption came from.
        condition_image: the condition image file, or None for an iterative trajectory (the last
            frame generated for ``iterative_source``).
        iterative_source: ``"<view_id>/traj0"`` for ``reconstruct*/traj1``, else None.
    """

    view_id: str
    traj_id: str
    folder: Path
    camera: Path
    render: Path
    render_mask: Path
    prompt: str
    prompt_file: Path
    condition_image: Optional[Path]
    iterative_source: Optional[str] = None

    @property
    def name(self) -> str:
        """``"<view_id>/<traj_id>"``."""
        return f"{self.view_id}/{self.traj_id}"

    def describe(self) -> dict[str, Any]:
        """The input files of this trajectory (strings), for summaries."""
        return {
            "name": self.name, "folder": str(self.folder), "camera": str(self.camera), "render": str(self.render),
            "render_mask": str(self.render_mask), "prompt_file": str(self.prompt_file),
            "condition_image": str(self.condition_image) if self.condition_image is not None
            else f"last generated frame of {self.iterative_source}",
        }


@dataclass
class ReferenceInputs:
    """A folder in the reference layout (see the module docstring).

    Attributes:
        kind: ``"images"``, ``"reconstruction"`` or ``"panorama"``.
        root: the folder.
        image: ``image.png`` (images, reconstruction), else None.
        camera: ``camera.json`` of the images kind, else None.
        prompt, prompt_file: the images kind's long caption / the reconstruction prompt, else None.
        trajectories: the trajectories in generation order (reconstruction, panorama).
        pano_bank: ``pano_bank/`` folder (panorama), else None.
        bank_camera: ``renders/traj_eloop/camera.json`` whose first intrinsic seeds the reconstruction
            bank, else None.
    """

    kind: str
    root: Path
    image: Optional[Path] = None
    camera: Optional[Path] = None
    prompt: Optional[str] = None
    prompt_file: Optional[Path] = None
    trajectories: list[TrajectoryInputs] = field(default_factory=list)
    pano_bank: Optional[Path] = None
    bank_camera: Optional[Path] = None


# ----------------------------------------------------------------------------------- small readers


def _require_file(path: Path, name: str) -> Path:
    if os.path.lexists(path) and not path.is_file():
        raise PathKindError(f"{name}: {str(path)!r} is not a regular file")
    if not path.is_file():
        raise MissingPathError(f"{name}: {str(path)!r} not found")
    return path


def read_prompt(path: str | os.PathLike, key: str, name: str = "inputs") -> str:
    """The caption ``key`` of a JSON prompt file (``prompt.json`` / ``traj_caption.json``)."""
    p = _require_file(Path(path), name)
    data = read_json_file(p, name, "prompt JSON file")
    if not isinstance(data, dict) or not isinstance(data.get(key), str):
        raise InputFileError(p, f"has no string {key!r} caption", option=name)
    return data[key]


def read_condition_image(path: str | os.PathLike, height: int, width: int) -> Tensor:
    """A condition image resized to ``(height, width)`` as the reference does (PIL bicubic).

    Returns:
        float32 ``(3, height, width)`` in [0, 1].
    """
    p = _require_file(Path(path), "inputs")
    with open_image_file(p, "inputs") as im, reading(p, "image file", option="inputs"):
        im = im.convert("RGB")
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BICUBIC)
        return load_image(im, name="inputs")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file (header only)."""
    p = _require_file(Path(path), "inputs")
    with open_image_file(p, "inputs") as im:
        return int(im.height), int(im.width)


def read_trajectory_camera(path: str | os.PathLike, image_path: Optional[str | os.PathLike]) -> Any:
    """A reference ``camera.json`` as a :class:`~worldstereo.camera.CameraTrajectory` whose
    intrinsics refer to the size of ``image_path`` (the reference takes the original size from the
    image file, not from the ``width``/``height`` keys); without an image (iterative trajectories,
    whose condition is a generated frame) the file's ``width``/``height`` keys."""
    traj = read_reference_json(_require_file(Path(path), "inputs"), image_path=image_path)
    if not traj.has_intrinsics:
        raise InputFileError(path, "has no 'intrinsic' matrices", option="inputs")
    return traj


def read_render(render: str | os.PathLike, render_mask: str | os.PathLike,
                indices: Optional[list[int]] = None) -> tuple[Tensor, Tensor]:
    """A ``render.mp4`` / ``render_mask.mp4`` pair at its stored size.

    Args:
        indices: frames to keep (e.g. :func:`~worldstereo.camera.trajectory_subsample_linspace`);
            default all.

    Returns:
        ``(video (T, 3, H, W), mask (T, 1, H, W))`` float32 in [0, 1]: the mask is the first
        channel of the mask video (white = hole), not yet thresholded.

    Raises:
        ValueError: the two videos have different frame counts, or an index is out of range.
    """
    video = read_video(_require_file(Path(render), "inputs"))
    mask = read_video(_require_file(Path(render_mask), "inputs"))[:, :1]
    if video.shape[0] != mask.shape[0]:
        raise InputFileError(render, f"has {video.shape[0]} frames but {str(render_mask)!r} has {mask.shape[0]}",
                             option="inputs")
    if indices is not None:
        if any(i < 0 or i >= video.shape[0] for i in indices):
            raise ValueError(f"inputs: frame indices {indices} out of range for {video.shape[0]} frames of "
                             f"{str(render)!r}")
        video, mask = video[indices], mask[indices]
    return video.contiguous(), mask.contiguous()


def read_pano_bank(folder: str | os.PathLike) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """The panorama crop bank: ``images/*.png`` (sorted) with ``cameras.json``.

    Returns:
        ``(images (N, 3, H, W) in [0, 1], w2c (N, 4, 4) float64, K (N, 3, 3) float64 in pixels of the
        images, keys)``.

    Raises:
        ValueError: an image has no camera, or the images differ in size.
    """
    root = Path(folder)
    cams_path = _require_file(root / "cameras.json", "inputs")
    cams = read_json_file(cams_path, "inputs", "camera bank JSON file")
    if not isinstance(cams, dict):
        raise InputFileError(cams_path, "expected a JSON object {view key: {extrinsic, intrinsic}}", option="inputs")
    files = sorted(p for p in (root / "images").glob("*.png"))
    if not files:
        raise MissingPathError(f"inputs: no images in {str(root / 'images')!r}")
    missing = [p.stem for p in files if p.stem not in cams]
    if missing:
        raise InputFileError(cams_path, f"has no camera for images {missing}", option="inputs")
    keys = [p.stem for p in files]
    images = [load_image(p, name="inputs") for p in files]
    sizes = {tuple(im.shape[-2:]) for im in images}
    if len(sizes) != 1:
        raise InputFileError(root, f"the images differ in size: {sorted(sizes)}", option="inputs")
    h, w = sizes.pop()
    with reading(cams_path, "camera bank JSON file", option="inputs"):
        traj = read_reference_json({k: cams[k] for k in keys}, height=h, width=w, dtype=torch.float64)
    if not traj.has_intrinsics:
        raise InputFileError(cams_path, "has no 'intrinsic' matrices", option="inputs")
    return torch.stack(images), traj.w2c, traj.K, keys


# ------------------------------------------------------------------------------------- folder scan


def detect_input_kind(folder: str | os.PathLike) -> str:
    """``"panorama"`` (a ``pano_bank/`` folder), ``"reconstruction"`` (``renders/`` + ``image.png``)
    or ``"images"`` (``image.png`` + ``camera.json``).

    Raises:
        FileNotFoundError / ValueError: not a folder, or none of the layouts.
    """
    root = Path(folder)
    if os.path.lexists(root) and not root.is_dir():
        raise PathKindError(f"inputs: {str(root)!r} is a file, not a folder in the reference example layout")
    if not root.is_dir():
        raise MissingPathError(f"inputs: folder {str(root)!r} does not exist")
    if (root / "pano_bank").is_dir():
        return "panorama"
    if (root / "renders").is_dir() and (root / "image.png").is_file():
        return "reconstruction"
    if (root / "image.png").is_file() and (root / "camera.json").is_file():
        return "images"
    raise InputFileError(root, "is not in the reference example layout (expected pano_bank/, renders/ + image.png, "
                               "or image.png + camera.json + prompt.json)", option="inputs")


def _stored_frame_count(path: Path) -> Optional[int]:
    """Frame count from the container header (None when the file does not state it)."""
    import av  # PyAV is only needed for video files

    with reading(path, "video file", option="inputs"):
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputFileError(path, "has no video stream", option="inputs")
            return int(container.streams.video[0].frames) or None


def _check_frame_counts(traj: TrajectoryInputs) -> None:
    """One render frame and one mask frame per camera (checked from headers, before any model work)."""
    doc = read_json_file(traj.camera, "inputs", "camera.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("extrinsic"), list):
        raise InputFileError(traj.camera, "is not a camera.json with an 'extrinsic' list", option="inputs")
    poses = len(doc["extrinsic"])
    for path in (traj.render, traj.render_mask):
        frames = _stored_frame_count(path)
        if frames is not None and frames != poses:
            raise InputFileError(path, f"has {frames} frames but {str(traj.camera)!r} has {poses} cameras",
                                 option="inputs")


def _trajectory(view_dir: Path, traj_dir: Path, caption_file: Path, caption_key: str,
                condition_image: Optional[Path], iterative_source: Optional[str] = None) -> TrajectoryInputs:
    traj = TrajectoryInputs(
        view_id=view_dir.name.replace("-", "_"), traj_id=traj_dir.name, folder=traj_dir,
        camera=_require_file(traj_dir / "camera.json", "inputs"),
        render=_require_file(traj_dir / "render.mp4", "inputs"),
        render_mask=_require_file(traj_dir / "render_mask.mp4", "inputs"),
        prompt=read_prompt(caption_file, caption_key), prompt_file=caption_file,
        condition_image=condition_image, iterative_source=iterative_source,
    )
    _check_frame_counts(traj)
    read_trajectory_camera(traj.camera, condition_image)  # a malformed camera.json fails before any model work
    return traj


def _view_is_valid(view_dir: Path) -> bool:
    path = view_dir / "valid_analysis.json"
    if not path.is_file():
        return True
    doc = read_json_file(path, "inputs", "valid_analysis.json")
    if not isinstance(doc, dict):
        raise InputFileError(path, "is not a JSON object with a 'valid' key", option="inputs")
    valid = doc.get("valid")
    if valid != "yes":
        logger.info("inputs: skipping %s (valid_analysis.json says valid=%r)", view_dir.name, valid)
        return False
    return True


def _panorama_order(root: Path) -> list[tuple[Path, Path]]:
    """(view folder, trajectory folder) pairs with a render.mp4, in ``sort_trajs`` order."""
    def with_render(paths: list[Path]) -> list[Path]:
        return [p for p in paths if (p / "render.mp4").is_file()]

    def sorted_trajs(prefix: str, traj_glob: str) -> list[tuple[Path, Path]]:
        pairs = [(t.parent, t) for t in with_render(sorted(root.glob(f"{prefix}*/{traj_glob}")))]
        return sorted(pairs, key=lambda vt: (vt[0].name, vt[1].name))

    order: list[tuple[Path, Path]] = []
    for view in sorted(p for p in root.glob("view*") if p.is_dir()):
        if _view_is_valid(view):
            order += [(view, view / t) for t in _VIEW_ORDER if (view / t / "render.mp4").is_file()]
    order += sorted_trajs("target", "traj*")
    order += sorted_trajs("reconstruct", "traj0")
    order += sorted_trajs("wonder", "traj*")
    order += sorted_trajs("reconstruct", "traj1")
    return order


def read_reference_inputs(folder: str | os.PathLike) -> ReferenceInputs:
    """Scan a folder in the reference example layout (see the module docstring); checks that every
    file a run needs is present (videos and cameras are read later, one trajectory at a time).

    Raises:
        FileNotFoundError / ValueError: naming ``inputs`` and the missing or malformed file.
    """
    root = Path(folder)
    kind = detect_input_kind(root)
    if kind == "images":
        prompt_file = root / "prompt.json"
        return ReferenceInputs(kind, root, image=root / "image.png", camera=root / "camera.json",
                               prompt=read_prompt(prompt_file, "long caption"), prompt_file=prompt_file)
    if kind == "reconstruction":
        prompt_file = root / "prompt.json"
        renders = root / "renders"
        present = [t for t in RECONSTRUCTION_ORDER if (renders / t).is_dir()]
        if not present:
            raise MissingPathError(f"inputs: {str(renders)!r} has none of {list(RECONSTRUCTION_ORDER)}")
        others = sorted(p.name for p in renders.iterdir() if p.is_dir() and p.name not in RECONSTRUCTION_ORDER)
        if others:
            logger.warning("inputs: ignoring %s (the reference runs only %s)", others, list(RECONSTRUCTION_ORDER))
        trajs = [_trajectory(renders, renders / t, prompt_file, "prompt", root / "image.png") for t in present]
        bank_camera = renders / "traj_eloop" / "camera.json"
        if not bank_camera.is_file():
            bank_camera = trajs[0].camera
            logger.warning("inputs: no renders/traj_eloop; the frame bank takes its intrinsics from %s", bank_camera)
        return ReferenceInputs(kind, root, image=root / "image.png", prompt=trajs[0].prompt, prompt_file=prompt_file,
                               trajectories=trajs, bank_camera=bank_camera)
    trajs = []
    for view, traj in _panorama_order(root):
        caption = traj / "traj_caption.json"
        if view.name.startswith("reconstruct") and traj.name == "traj1":
            source = f"{view.name.replace('-', '_')}/traj0"
            trajs.append(_trajectory(view, traj, caption, "prompt", None, iterative_source=source))
        else:
            trajs.append(_trajectory(view, traj, caption, "prompt", _require_file(view / "start_frame.png", "inputs")))
    if not trajs:
        raise MissingPathError(f"inputs: {str(root)!r} has no <view>/<traj>/render.mp4 trajectory")
    names = {t.name for t in trajs}
    for t in trajs:
        if t.iterative_source is not None and t.iterative_source not in names:
            raise MissingPathError(f"inputs: {t.name} continues {t.iterative_source}, which has no render.mp4")
    _require_file(root / "pano_bank" / "cameras.json", "inputs")
    return ReferenceInputs(kind, root, trajectories=trajs, pano_bank=root / "pano_bank")
