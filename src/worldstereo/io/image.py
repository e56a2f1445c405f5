"""Image input/output and resizing.

Images in the library are float32 tensors ``(3, H, W)`` in [0, 1] (RGB). Intrinsics ``K`` are 3x3 in
pixels of the image they describe; resizing an image from ``(H0, W0)`` to ``(H1, W1)`` multiplies
row 0 of K by ``W1 / W0`` and row 1 by ``H1 / H0`` (the reference implementation's convention).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from worldstereo.io import limits
from worldstereo.io.atomic import atomic_write
from worldstereo.io.errors import InputFileError
from worldstereo.io.files import check_input_file

__all__ = [
    "ImageLike",
    "load_image",
    "open_image_file",
    "read_image_file",
    "save_image",
    "to_pil",
    "resize_image",
    "rescale_intrinsics",
    "resize_image_and_intrinsics",
]

logger = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, Image.Image, Tensor, np.ndarray]


def _pil_to_tensor(img: Image.Image, name: str = "image", path: Path | None = None) -> Tensor:
    """PIL image of any mode -> float32 (3,H,W) in [0,1]. Alpha is dropped (not composited).

    16-bit modes are scaled by 1/65535. 32-bit integer (``I``) images must hold values in
    [0, 65535] (scaled by 1/65535, with a warning); 32-bit float (``F``) images must hold values in
    [0, 1]. Anything else is refused rather than clipped.
    """
    def bad(reason: str) -> ValueError:
        return InputFileError(path, reason, option=name) if path is not None else ValueError(f"{name}: {reason}")

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0
        return torch.from_numpy(arr.astype(np.float32))[None].repeat(3, 1, 1).contiguous()
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < 0 or hi > 65535:
            raise bad(f"32-bit integer image with values in [{lo:.0f}, {hi:.0f}]; expected 8- or 16-bit data "
                      "(values in [0, 65535]) — convert it to an 8/16-bit image first")
        logger.warning("%s: 32-bit integer image read as 16-bit data (values / 65535)", name)
        return torch.from_numpy((arr / 65535.0).astype(np.float32))[None].repeat(3, 1, 1).contiguous()
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise bad("32-bit float image contains NaN or infinite values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise bad(f"32-bit float image with values in [{lo:.4g}, {hi:.4g}]; expected values in [0, 1] "
                      "(float images are never clipped)")
        return torch.from_numpy(np.clip(arr, 0.0, 1.0))[None].repeat(3, 1, 1).contiguous()
    rgb = img.convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


@contextlib.contextmanager
def open_image_file(path: str | os.PathLike[str], name: str = "image") -> Iterator[Image.Image]:
    """Open an image file with PIL after checking the file and the declared size (not decoded yet).

    Yields the opened (lazy) image; the caller decodes it (``img.load()``) inside the ``with``.
    The pixel count declared in the header must not exceed :data:`~worldstereo.io.limits.MAX_IMAGE_PIXELS`
    (nor PIL's decompression-bomb limit).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputFileError: not a file, not an image PIL can identify, a decompression bomb, zero size.
    """
    p = check_input_file(path, name, "image file")
    try:
        img = Image.open(p)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        what = "a decompression bomb (too many pixels)" if not isinstance(exc, UnidentifiedImageError) else \
            "not a readable image file"
        raise InputFileError(p, f"{what}: {' '.join(str(exc).split())[:200]}", option=name) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise InputFileError(p, f"cannot read the image: {type(exc).__name__}: {exc}", option=name) from None
    with img:
        w, h = img.size
        if w < 1 or h < 1:
            raise InputFileError(p, f"image has zero size {w}x{h}", option=name)
        if w * h > limits.MAX_IMAGE_PIXELS:
            raise InputFileError(p, f"image of {w}x{h} pixels exceeds the limit of {limits.MAX_IMAGE_PIXELS} pixels",
                                 option=name)
        yield img


def read_image_file(path: str | os.PathLike[str], name: str = "image") -> Tensor:
    """Decode an image file to float32 ``(3, H, W)`` in [0, 1] (see :func:`load_image` for the modes).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputFileError: anything wrong with the file (truncated, corrupt, too large, unsupported
            mode, 32-bit values that do not fit [0, 1]); the message names the file.
    """
    with open_image_file(path, name) as img:
        p = Path(path)
        try:
            img.load()
            return _pil_to_tensor(img, name, p)
        except InputFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise InputFileError(p, f"cannot decode the image (corrupt or truncated?): {type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:200]}", option=name) from None


def _check_float_range(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        hint = " (for images in [-1, 1] pass (x + 1) / 2)" if lo >= -1.0 - 1e-3 and hi <= 1.0 + 1e-3 else ""
        raise ValueError(f"{name}: float image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]{hint}")


def _array_to_tensor(arr: Tensor, name: str, channels_last: bool) -> Tensor:
    """(C,H,W) / (1,C,H,W) (or (H,W,C) when ``channels_last``) with C in {1,3,4} -> (3,H,W) [0,1]."""
    shape = tuple(arr.shape)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"{name}: expected a single image (C,H,W) or (1,C,H,W), got shape {shape}")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None] if not channels_last else arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected shape (C,H,W) or (1,C,H,W), got {shape}")
    if channels_last:
        arr = arr.permute(2, 0, 1)
    c, h, w = arr.shape
    if c not in (1, 3, 4):
        raise ValueError(
            f"{name}: expected 1, 3 or 4 channels in dimension {-1 if channels_last else -3}, got shape {shape}"
        )
    if h < 1 or w < 1:
        raise ValueError(f"{name}: image has zero size, shape {shape}")
    if arr.dtype == torch.bool:
        raise TypeError(f"{name}: boolean tensors are not images (dtype {arr.dtype})")
    if arr.dtype == torch.uint8:
        out = arr.float() / 255.0
    elif arr.is_floating_point():
        out = arr.float()
        _check_float_range(out, name)
        out = out.clamp(0.0, 1.0)
    else:
        raise TypeError(f"{name}: expected a float tensor in [0,1] or uint8, got dtype {arr.dtype}")
    if c == 1:
        out = out.repeat(3, 1, 1)
    elif c == 4:
        out = out[:3]
    return out.contiguous()


def load_image(src: ImageLike, name: str = "condition_image") -> Tensor:
    """Load an image from a file path, PIL image, tensor or numpy array.

    Args:
        src: one of
            * a path (``str`` / ``os.PathLike``) to any image file PIL can read: 8-bit modes
              (RGB, RGBA, L, LA, P palette, CMYK, YCbCr ... converted to RGB), 16-bit greyscale
              (scaled by 1/65535), 32-bit integer greyscale with values in [0, 65535] (scaled by
              1/65535, with a warning), 32-bit float greyscale with values in [0, 1]; other 32-bit
              values are refused, never clipped. At most ``MAX_IMAGE_PIXELS`` pixels;
            * a ``PIL.Image.Image`` (any mode; alpha is dropped);
            * a ``torch.Tensor`` ``(C, H, W)`` or ``(1, C, H, W)`` with C in {1, 3, 4}, float in
              [0, 1] or ``uint8`` in [0, 255];
            * a ``numpy.ndarray`` ``(H, W, C)`` or ``(H, W)``, ``uint8`` or float in [0, 1].
        name: name of the parameter the image came from, used in error messages.

    Returns:
        float32 tensor ``(3, H, W)`` in [0, 1], RGB, on the CPU for files (tensor inputs keep their
        device).

    Raises:
        FileNotFoundError: the path does not exist.
        InputFileError: (a ``ValueError``) the file is a directory, not a readable image, truncated,
            too large, or holds values that do not fit [0, 1]; the message names the file.
        ValueError: the array/tensor has a bad shape or values outside [0, 1].
        TypeError: ``src`` has an unsupported type or dtype.
    """
    if isinstance(src, (str, os.PathLike)):
        return read_image_file(src, name)
    if isinstance(src, Image.Image):
        if src.width < 1 or src.height < 1:
            raise ValueError(f"{name}: PIL image has zero size {src.size}")
        return _pil_to_tensor(src, name)
    if isinstance(src, Tensor):
        return _array_to_tensor(src.detach(), name, channels_last=False)
    if isinstance(src, np.ndarray):
        if src.dtype.kind not in "uf" or (src.dtype.kind == "u" and src.dtype != np.uint8):
            raise TypeError(f"{name}: numpy images must be uint8 or float, got dtype {src.dtype}")
        return _array_to_tensor(torch.from_numpy(np.ascontiguousarray(src)), name, channels_last=True)
    raise TypeError(
        f"{name}: expected a file path, PIL.Image, torch.Tensor (C,H,W)/(1,C,H,W) or numpy array, "
        f"got {type(src).__name__}"
    )


def to_pil(image: Tensor, name: str = "image") -> Image.Image:
    """Convert a float ``(3, H, W)`` / ``(1, H, W)`` / ``(H, W)`` tensor in [0, 1] to an 8-bit PIL image.

    Values are clipped to [0, 1] and rounded. Three channels give an ``RGB`` image, one an ``L`` image.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(image).__name__}")
    t = image.detach().to("cpu")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"{name}: expected (3,H,W), (1,H,W) or (H,W), got shape {tuple(image.shape)}")
    if t.dtype == torch.uint8:
        arr = t.numpy()
    else:
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        arr = (t.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")


def save_image(path: str | os.PathLike[str], image: Tensor | Image.Image) -> Path:
    """Save an image atomically (temporary file + rename); the format follows the file extension.

    Args:
        path: destination, e.g. ``.png`` or ``.jpg``; its folder must exist.
        image: float tensor ``(3, H, W)`` / ``(1, H, W)`` / ``(H, W)`` in [0, 1], or a PIL image.

    Returns:
        The written path.

    Raises:
        ValueError: unknown file extension or bad image shape.
    """
    p = Path(path)
    ext = p.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"path: unknown image file extension {ext!r} in {str(p)!r} (use e.g. .png or .jpg)")
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    with atomic_write(p) as tmp:
        pil.save(tmp, format=fmt)
    return p


def rescale_intrinsics(K: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Tensor:
    """Rescale pixel intrinsics for a resized image.

    Args:
        K: ``(..., 3, 3)`` intrinsics in pixels of an image of size ``src_size``.
        src_size: ``(height, width)`` the intrinsics refer to.
        dst_size: ``(height, width)`` of the resized image.

    Returns:
        New ``(..., 3, 3)`` tensor: row 0 scaled by ``W1 / W0``, row 1 by ``H1 / H0``.
    """
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K: expected (...,3,3) intrinsics, got shape {tuple(K.shape)}")
    (h0, w0), (h1, w1) = src_size, dst_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"src_size/dst_size: sizes must be positive, got {src_size} -> {dst_size}")
    out = K.clone()
    out[..., 0, :] = out[..., 0, :] * (w1 / w0)
    out[..., 1, :] = out[..., 1, :] * (h1 / h0)
    return out


def resize_image(image: Tensor, height: int, width: int, *, mode: str = "bicubic") -> Tensor:
    """Resize a float image or batch of images.

    Args:
        image: ``(C, H, W)`` or ``(T, C, H, W)`` float in [0, 1].
        height, width: target size in pixels (positive integers).
        mode: ``"bicubic"`` (antialiased, clamped to [0, 1]; close to PIL's bicubic used by the
            reference), ``"bilinear"`` (antialiased) or ``"nearest"`` (for masks and depth maps).

    Returns:
        Tensor of the same rank with spatial size ``(height, width)``; the input itself when the size
        already matches.
    """
    if not isinstance(image, Tensor) or image.ndim not in (3, 4):
        raise ValueError(
            f"image: expected a tensor (C,H,W) or (T,C,H,W), got {getattr(image, 'shape', type(image).__name__)}"
        )
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height/width: expected positive integers, got {height!r}x{width!r}")
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bicubic', 'bilinear' or 'nearest', got {mode!r}")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    batched = image if image.ndim == 4 else image[None]
    orig_dtype = batched.dtype
    x = batched.float()
    if mode == "nearest":
        y = F.interpolate(x, size=(height, width), mode="nearest-exact")
    else:
        y = F.interpolate(x, size=(height, width), mode=mode, align_corners=False, antialias=True)
        if mode == "bicubic":
            y = y.clamp(0.0, 1.0)
    y = y.to(orig_dtype) if orig_dtype.is_floating_point else y
    return y if image.ndim == 4 else y[0]


def resize_image_and_intrinsics(
    image: Tensor, K: Tensor, height: int, width: int, *, mode: str = "bicubic"
) -> tuple[Tensor, Tensor]:
    """Resize an image ``(C, H, W)`` / ``(T, C, H, W)`` and rescale its intrinsics ``(..., 3, 3)`` to match.

    Returns:
        ``(resized_image, K_resized)``; see :func:`resize_image` and :func:`rescale_intrinsics`.
    """
    h0, w0 = int(image.shape[-2]), int(image.shape[-1])
    return resize_image(image, height, width, mode=mode), rescale_intrinsics(K, (h0, w0), (height, width))
