"""H.264 video input/output with PyAV.

Videos in the library are float tensors ``(T, 3, H, W)`` in [0, 1]. Files are written as H.264
(``libx264``) in ``yuv420p`` at 16 fps by default, the format of the reference implementation's
``render.mp4`` / ``render_mask.mp4`` and of its generated videos. The container follows the file
extension (:data:`VIDEO_CONTAINERS`: ``.mp4``/``.m4v`` MP4, ``.mov`` QuickTime, ``.mkv`` Matroska,
``.avi`` AVI); any other extension is refused, so a file never holds a container its name does not
announce. ``yuv420p`` needs even frame sizes; odd sizes raise a :class:`ValueError` (pad or resize
the frames first) rather than being silently changed.

Reading decodes any video FFmpeg can read; every failure (not a video, corrupt or truncated data, a
decoded size beyond :data:`~worldstereo.io.limits.MAX_VIDEO_BYTES`) raises
:class:`~worldstereo.io.errors.InputFileError` naming the file.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

from worldstereo.io import limits
from worldstereo.io.atomic import atomic_write
from worldstereo.io.errors import InputFileError
from worldstereo.io.files import check_input_file

__all__ = ["VIDEO_CONTAINERS", "write_video", "read_video", "frames_to_uint8"]

#: file extension -> FFmpeg container written by :func:`write_video` (all hold H.264)
VIDEO_CONTAINERS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}

logger = logging.getLogger(__name__)

FramesLike = Union[Tensor, np.ndarray]


def frames_to_uint8(frames: FramesLike, name: str = "frames") -> np.ndarray:
    """Convert a video to a contiguous ``uint8`` array ``(T, H, W, 3)``.

    Args:
        frames: either float ``(T, 3, H, W)`` (or ``(T, 1, H, W)``, replicated to 3 channels) in
            [0, 1] (a rounding excess of 1e-3 is clipped; anything further out is refused) or
            ``uint8`` ``(T, H, W, 3)``; a torch tensor or a numpy array.
        name: parameter name used in error messages.

    Returns:
        ``uint8`` array ``(T, H, W, 3)``.

    Raises:
        TypeError: ``frames`` is not a tensor/array.
        ValueError: wrong number of dimensions or channels, empty video, non-finite values or
            values outside [0, 1].
    """
    if isinstance(frames, Tensor):
        arr = frames.detach().to("cpu")
        is_uint8 = arr.dtype == torch.uint8
        arr = arr.numpy() if is_uint8 else arr.float().numpy()
    elif isinstance(frames, np.ndarray):
        arr = frames
        is_uint8 = arr.dtype == np.uint8
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(frames).__name__}")
    if arr.ndim != 4:
        raise ValueError(
            f"{name}: expected float (T,3,H,W) in [0,1] or uint8 (T,H,W,3), got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: the video has no frames (shape {tuple(arr.shape)})")
    if is_uint8:
        if arr.shape[-1] != 3:
            raise ValueError(f"{name}: uint8 frames must be (T,H,W,3), got shape {tuple(arr.shape)}")
        return np.ascontiguousarray(arr)
    if arr.shape[1] not in (1, 3):
        raise ValueError(f"{name}: float frames must be (T,3,H,W) or (T,1,H,W), got shape {tuple(arr.shape)}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"{name}: float frames must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}] (values are "
                         "never clipped silently; for frames in [-1, 1] pass (x + 1) / 2)")
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    out = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def write_video(
    path: str | os.PathLike[str],
    frames: FramesLike,
    fps: int | float = 16,
    *,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Write a video as H.264 (``libx264``, ``yuv420p``) in the container of the extension, atomically.

    The file is encoded to a temporary file in the destination folder and renamed onto ``path`` only
    when encoding succeeded, so readers never see a partial file.

    Args:
        path: destination file; its folder must exist. The extension chooses the container
            (:data:`VIDEO_CONTAINERS`: ``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.avi``).
        frames: float ``(T, 3, H, W)`` in [0, 1] (``(T, 1, H, W)`` is replicated to grey) or
            ``uint8`` ``(T, H, W, 3)``; tensor or numpy array. H and W must be even (``yuv420p``).
        fps: frames per second (default 16, as the reference implementation).
        crf: x264 constant rate factor (0 = lossless luma, 18 = visually lossless, 23 = x264 default).
        preset: x264 speed preset.

    Returns:
        The written path.

    Raises:
        ValueError: unsupported extension, bad shape, odd frame size, non-positive fps or invalid crf.
        FileNotFoundError: the destination folder does not exist.
    """
    import av  # local import: PyAV is only needed for video I/O

    out_path = Path(path)
    container_format = VIDEO_CONTAINERS.get(out_path.suffix.lower())
    if container_format is None:
        raise ValueError(f"path: cannot write a video to {str(out_path)!r}: unsupported extension "
                         f"{out_path.suffix!r}; use one of {', '.join(VIDEO_CONTAINERS)} (H.264)")
    data = frames_to_uint8(frames)
    t, h, w, _ = data.shape
    if h % 2 or w % 2:
        raise ValueError(
            f"frames: H.264 yuv420p needs an even frame size, got {h}x{w} (height x width); "
            "pad or resize the frames to even dimensions first"
        )
    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise ValueError(f"fps: expected a positive number (at most 1000), got {fps!r}")
    if not (isinstance(crf, int) and 0 <= crf <= 51):
        raise ValueError(f"crf: expected an integer in [0, 51], got {crf!r}")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_write(out_path) as tmp:
        with av.open(str(tmp), mode="w", format=container_format) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = w
            stream.height = h
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for frame_arr in data:
                frame = av.VideoFrame.from_ndarray(frame_arr, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    logger.debug("wrote %d frames (%dx%d, %s fps) to %s", t, h, w, fps, out_path)
    return out_path


def read_video(path: str | os.PathLike[str], *, max_bytes: int = limits.MAX_VIDEO_BYTES) -> Tensor:
    """Decode every frame of a video file.

    Args:
        path: a video file readable by FFmpeg (e.g. an H.264 MP4).
        max_bytes: refuse videos whose decoded RGB frames would exceed this many bytes.

    Returns:
        float32 tensor ``(T, 3, H, W)`` in [0, 1] (RGB).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputFileError: (a ``ValueError``) the file is not a decodable video, holds no frames, has
            frames of changing size, or is too large; the message names the file.
    """
    import av

    p = check_input_file(path, "path", "video file")
    frames: list[np.ndarray] = []
    total = 0
    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.video:
                raise InputFileError(p, "has no video stream")
            stream = container.streams.video[0]
            w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if w * h > limits.MAX_IMAGE_PIXELS:
                raise InputFileError(p, f"video frames of {w}x{h} pixels exceed the limit of "
                                        f"{limits.MAX_IMAGE_PIXELS} pixels")
            for frame in container.decode(video=0):
                arr = frame.to_ndarray(format="rgb24")
                if frames and arr.shape != frames[0].shape:
                    raise InputFileError(p, f"frame {len(frames)} is {arr.shape[1]}x{arr.shape[0]} but frame 0 is "
                                            f"{frames[0].shape[1]}x{frames[0].shape[0]}; expected one frame size")
                total += arr.nbytes
                if total > max_bytes or len(frames) >= limits.MAX_VIDEO_FRAMES:
                    raise InputFileError(p, f"the decoded video exceeds the limit of {max_bytes} bytes / "
                                            f"{limits.MAX_VIDEO_FRAMES} frames")
                frames.append(arr)
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - av.FFmpegError and anything a corrupt file triggers
        raise InputFileError(p, f"cannot decode the video: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}") from None
    if not frames:
        raise InputFileError(p, "the video contains no frames")
    arr = np.stack(frames)  # (T,H,W,3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
