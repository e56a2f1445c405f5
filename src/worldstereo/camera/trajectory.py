"""`CameraTrajectory`: a sequence of pinhole cameras (pose + intrinsics + image size)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldstereo.devices import check_device
from worldstereo.io.limits import MAX_CAMERAS, MAX_IMAGE_SIDE
from .rotations import matrix_to_quaternion, quaternion_slerp, quaternion_to_matrix

# .fit, .formats and .presets import this module, so the methods that delegate to them import them
# when called (lazy: import cycle).

__all__ = ["CameraTrajectory", "intrinsics_from_fov", "POSE_CONVENTIONS", "TRAJECTORY_UNITS"]

logger = logging.getLogger(__name__)

#: pose conventions accepted by :meth:`CameraTrajectory.from_poses`
POSE_CONVENTIONS = ("w2c_opencv", "c2w_opencv", "w2c_opengl", "c2w_opengl")
#: what a trajectory's translations are measured in (:attr:`CameraTrajectory.units`): ``"scene"``
#: (the units of the depth / point cloud) or ``"median_depth"`` (multiples of the condition view's
#: median depth; presets)
TRAJECTORY_UNITS = ("scene", "median_depth")
#: a principal point farther than this share of the image size from the centre draws a warning
#: (typical of a K written for another image size)
_OFF_CENTRE_WARN = 0.25
#: relative aspect-ratio difference above which a rescale of pixel intrinsics is called anisotropic
_ASPECT_RTOL = 0.01

_ROTATION_ATOL = 1e-3  # |R R^T - I| max and |det R - 1|; float32 JSON round trips stay far below
_BOTTOM_ATOL = 1e-5
_OPENGL_FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))

PathLike = str | os.PathLike


def _check_size(value: Any, name: str) -> int:
    """A positive integer image side (``height`` / ``width``, at most ``MAX_IMAGE_SIDE``) or frame
    count (``num_frames``, at most ``MAX_CAMERAS``): the bounds of :mod:`worldstereo.io.limits`,
    so that no size makes a trajectory (or what is rendered from it) allocate without bound."""
    limit = MAX_CAMERAS if name.endswith("frames") else MAX_IMAGE_SIDE
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if not 0 < int(value) <= limit:
        raise ValueError(f"{name}: expected a positive int of at most {limit}, got {value}")
    return int(value)


def _as_float_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected a tensor, array or nested list of numbers ({exc})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t


def intrinsics_from_fov(height: int, width: int, fov_deg: float = 60.0, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> Tensor:
    """Pixel intrinsics (3, 3) of a centred pinhole camera with horizontal field of view ``fov_deg``.

    ``fx = fy = (width / 2) / tan(fov_deg / 2)``, ``cx = width / 2``, ``cy = height / 2`` (square pixels).

    Raises:
        ValueError: non-positive size or ``fov_deg`` outside (0, 180).
    """
    height = _check_size(height, "height")
    width = _check_size(width, "width")
    if isinstance(fov_deg, bool) or not isinstance(fov_deg, (int, float)) or not (0.0 < float(fov_deg) < 180.0):
        raise ValueError(f"fov_deg: expected a horizontal field of view in (0, 180) degrees, got {fov_deg!r}")
    f = (width / 2.0) / math.tan(math.radians(float(fov_deg)) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _validate_w2c(w2c: Any, name: str = "w2c") -> Tensor:
    t = _as_float_tensor(w2c, name)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected shape (N, 4, 4) or (4, 4), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one pose, got 0")
    if not torch.isfinite(t).all():
        bad = torch.nonzero(~torch.isfinite(t).flatten(1).all(1)).flatten().tolist()
        raise ValueError(f"{name}: poses must be finite; non-finite values in frames {bad[:10]}")
    td = t.double()
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=t.device)
    if (td[:, 3] - bottom).abs().max() > _BOTTOM_ATOL:
        raise ValueError(f"{name}: the last row of every pose must be (0, 0, 0, 1)")
    R = td[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64, device=t.device)
    ortho_err = (R @ R.transpose(-1, -2) - eye).abs().flatten(1).amax(1)
    det = torch.linalg.det(R)
    bad = torch.nonzero((ortho_err > _ROTATION_ATOL) | ((det - 1.0).abs() > _ROTATION_ATOL)).flatten().tolist()
    if bad:
        raise ValueError(
            f"{name}: the 3x3 rotation block must be a proper rotation (orthonormal, det +1; rigid pose "
            f"without scale or reflection); frames {bad[:10]} are not (max |R R^T - I| = "
            f"{float(ortho_err.max()):.2e}, det range [{float(det.min()):.4f}, {float(det.max()):.4f}])"
        )
    return t


def _validate_K(K: Any, n: int, height: int, width: int, name: str = "K") -> Tensor:
    t = _as_float_tensor(K, name)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape (N, 3, 3) or (3, 3), got {tuple(t.shape)}")
    if t.shape[0] == 1 and n != 1:
        t = t.expand(n, 3, 3).clone()
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} intrinsics matrices (one per pose) or one, got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: intrinsics must be finite")
    fx, fy, cx, cy = t[:, 0, 0], t[:, 1, 1], t[:, 0, 2], t[:, 1, 2]
    if (fx <= 0).any() or (fy <= 0).any():
        raise ValueError(f"{name}: focal lengths fx = K[0,0] and fy = K[1,1] must be positive pixels")
    last = torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype, device=t.device)
    if (t[:, 2] - last).abs().max() > 1e-6 or t[:, 1, 0].abs().max() > 1e-6:
        raise ValueError(f"{name}: expected pinhole intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    if (cx < 0).any() or (cx > width).any() or (cy < 0).any() or (cy > height).any():
        raise ValueError(
            f"{name}: principal point (cx, cy) must lie inside the {width}x{height} image it refers to "
            f"(0 <= cx <= width, 0 <= cy <= height); got cx in [{float(cx.min()):.2f}, {float(cx.max()):.2f}], "
            f"cy in [{float(cy.min()):.2f}, {float(cy.max()):.2f}] - is K in pixels of a different image size?"
        )
    off = torch.maximum((cx / width - 0.5).abs(), (cy / height - 0.5).abs())
    if float(off.max()) > _OFF_CENTRE_WARN:
        i = int(off.argmax())
        logger.warning(
            "%s: the principal point (%.1f, %.1f) of frame %d is far from the centre of the %dx%d image it refers to "
            "(more than %.0f%% of the size off); is K in pixels of another image size? A K for a 2x larger image "
            "puts it at the image corner", name, float(cx[i]), float(cy[i]), i, width, height, 100 * _OFF_CENTRE_WARN)
    return t


def _invert_rigid(w2c: Tensor) -> Tensor:
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3:]
    out = torch.zeros_like(w2c)
    Rt = R.transpose(-1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


class CameraTrajectory:
    """A sequence of ``N`` pinhole cameras: pose, intrinsics and the image size they describe.

    Conventions:
        * ``w2c`` (N, 4, 4): world-to-camera rigid transforms in **OpenCV axes** (x right, y down,
          z forward). ``x_cam = w2c @ x_world``. ``c2w`` is the inverse.
        * ``K`` (N, 3, 3): intrinsics in **pixels of the (height, width) image** (fx, fy, cx, cy);
          resizing the image rescales row 0 by ``new_width / width`` and row 1 by
          ``new_height / height`` (:meth:`resized`). ``K`` may be ``None`` (no intrinsics yet; add
          them with :meth:`with_intrinsics`).
        * Frame 0 is the condition view; presets start at the identity pose.

    Units (:attr:`units`):
        * ``"median_depth"`` — every preset: translations (and preset distances, radii, focus
          depths) are **multiples of the condition view's median depth**, whatever the depth
          source. ``forward(distance=0.5)`` moves the camera half way to the typical surface of
          a room photographed with relative depth (median 1.0) or with metric depth (median
          3.2 m: 1.6 m), of a street (median 15 m: 7.5 m) or of a given point cloud. The
          generation and render code convert such a trajectory with :meth:`in_scene_units`
          once the scene's median depth is known.
        * ``"scene"`` — trajectories read from files or built from poses: translations in the
          units of the depth source (metres for metric depth; for relative depth the scene is
          normalised so that the condition view's median depth is 1.0). A camera file written
          for a metric scene therefore only fits a scene of the same scale; when it does not,
          :meth:`fit_to_scene` rescales it.

    Intrinsics of presets and of ``fov_deg`` constructors are a field of view
    (:attr:`fov_intrinsics`): :meth:`at_size` rebuilds them for any image size with square
    pixels and the same horizontal field of view, whereas pixel intrinsics (from files) describe
    one image and are rescaled per axis (with a warning when that stretches the pixels).

    The tensors keep the floating dtype they were given (float32 by default; float64 is kept, e.g.
    to round-trip files exactly); integer input becomes float32.

    Args:
        w2c: (N, 4, 4) or (4, 4) world-to-camera poses (tensor, array or nested lists).
        K: (N, 3, 3) or (3, 3) (broadcast to every frame) pixel intrinsics, or ``None``.
        height, width: image size ``K`` refers to; required when ``K`` is given.
        units: ``"scene"`` (default) or ``"median_depth"``, see above.
        fov_intrinsics: whether ``K`` stands for a field of view rather than a particular image
            (square pixels kept by :meth:`at_size`); needs ``K``.

    Raises:
        ValueError: wrong shapes, non-finite values, a rotation block that is not a proper rotation,
            a bottom row other than (0, 0, 0, 1), non-positive focal lengths, a principal point
            outside the image, or ``K`` without ``height``/``width``.
        TypeError: non-numeric input or non-integer sizes.
    """

    def __init__(self, w2c: Any, K: Any = None, height: int | None = None, width: int | None = None, *,
                 units: str = "scene", fov_intrinsics: bool = False) -> None:
        if units not in TRAJECTORY_UNITS:
            raise ValueError(f"units: expected one of {TRAJECTORY_UNITS}, got {units!r}")
        if not isinstance(fov_intrinsics, bool):
            raise TypeError(f"fov_intrinsics: expected a bool, got {fov_intrinsics!r}")
        if fov_intrinsics and K is None:
            raise ValueError("fov_intrinsics: True needs K (the intrinsics of the field of view)")
        w2c_t = _validate_w2c(w2c, "w2c")
        if (height is None) != (width is None):
            raise ValueError("height/width: give both or neither")
        h = _check_size(height, "height") if height is not None else None
        w = _check_size(width, "width") if width is not None else None
        K_t: Tensor | None = None
        if K is not None:
            if h is None or w is None:
                raise ValueError("height/width: required when K is given (the image size K is expressed in)")
            K_t = _validate_K(K, w2c_t.shape[0], h, w, "K").to(device=w2c_t.device, dtype=w2c_t.dtype)
        self.w2c: Tensor = w2c_t.contiguous()
        self.K: Tensor | None = None if K_t is None else K_t.contiguous()
        self.height: int | None = h
        self.width: int | None = w
        self.units: str = units
        self.fov_intrinsics: bool = fov_intrinsics

    # ------------------------------------------------------------------ basic protocol
    @classmethod
    def _unchecked(cls, w2c: Tensor, K: Tensor | None, height: int | None, width: int | None, *,
                   units: str = "scene", fov_intrinsics: bool = False) -> CameraTrajectory:
        """Build without validation (inputs derived from an already validated trajectory)."""
        obj = cls.__new__(cls)
        obj.w2c = w2c.contiguous()
        obj.K = None if K is None else K.contiguous()
        obj.height = height
        obj.width = width
        obj.units = units
        obj.fov_intrinsics = bool(fov_intrinsics and K is not None)
        return obj

    def _like(self, w2c: Tensor, K: Tensor | None, height: int | None = None, width: int | None = None
              ) -> CameraTrajectory:
        """A trajectory with this one's units and kind of intrinsics (size kept unless given)."""
        return CameraTrajectory._unchecked(w2c, K, self.height if height is None else height,
                                           self.width if width is None else width, units=self.units,
                                           fov_intrinsics=self.fov_intrinsics)

    def __len__(self) -> int:
        return int(self.w2c.shape[0])

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> CameraTrajectory:
        """Frames ``index`` as a new trajectory (an int gives a 1-frame trajectory).

        Accepts an int (negative allowed), a slice, a LongTensor/list of indices or a boolean mask.
        """
        n = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index: {i} out of range for a trajectory of {n} frames")
            sel: Any = slice(i % n, i % n + 1)
        elif isinstance(index, slice):
            sel = index
        else:
            try:
                idx = torch.as_tensor(index, device=self.w2c.device) if not isinstance(index, Tensor) else index
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"index: expected an int, a slice, integer indices or a bool mask, got "
                                f"{type(index).__name__} {index!r:.60}") from None
            if idx.dtype == torch.bool:
                if idx.shape != (n,):
                    raise IndexError(f"index: boolean mask must have shape ({n},), got {tuple(idx.shape)}")
                idx = torch.nonzero(idx).flatten()
            if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise TypeError(f"index: expected int, slice, integer indices or bool mask, got dtype {idx.dtype}")
            idx = idx.long().flatten().to(self.w2c.device)
            if idx.numel() and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"index: indices out of range for a trajectory of {n} frames")
            sel = idx % n
        w2c = self.w2c[sel]
        if w2c.shape[0] == 0:
            raise IndexError("index: selects no frame (a trajectory needs at least one)")
        K = None if self.K is None else self.K[sel]
        return self._like(w2c, K)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        size = f"{self.height}x{self.width}" if self.height is not None else "no size"
        return (f"CameraTrajectory(num_frames={len(self)}, image={size}, intrinsics={self.has_intrinsics}, "
                f"units={self.units!r}, dtype={self.w2c.dtype}, device={self.w2c.device})")

    @property
    def num_frames(self) -> int:
        """Number of cameras ``N``."""
        return len(self)

    @property
    def c2w(self) -> Tensor:
        """(N, 4, 4) camera-to-world poses (OpenCV axes): the exact rigid inverse of ``w2c``."""
        return _invert_rigid(self.w2c)

    @property
    def centers(self) -> Tensor:
        """(N, 3) camera centres in world coordinates (``-R^T t``)."""
        R = self.w2c[:, :3, :3]
        t = self.w2c[:, :3, 3:]
        return (-R.transpose(-1, -2) @ t)[..., 0]

    @property
    def has_intrinsics(self) -> bool:
        """Whether ``K`` (and hence the image size) is known."""
        return self.K is not None

    @property
    def device(self) -> torch.device:
        return self.w2c.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w2c.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CameraTrajectory:
        """Copy to ``device`` and/or floating ``dtype`` (float32 or float64)."""
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if device is not None:
            device = check_device(device, "device")
        w2c = self.w2c.to(device=device, dtype=dtype)
        K = None if self.K is None else self.K.to(device=device, dtype=dtype)
        return self._like(w2c, K)

    def allclose(self, other: CameraTrajectory, atol: float = 1e-6) -> bool:
        """Same length, size, and poses/intrinsics within ``atol`` (the numbers only: :attr:`units`
        and :attr:`fov_intrinsics` are not compared)."""
        if len(self) != len(other) or (self.height, self.width) != (other.height, other.width):
            return False
        if (self.K is None) != (other.K is None):
            return False
        if not torch.allclose(self.w2c.double().cpu(), other.w2c.double().cpu(), atol=atol, rtol=0):
            return False
        if self.K is not None and other.K is not None:
            return torch.allclose(self.K.double().cpu(), other.K.double().cpu(), atol=atol * 1e3, rtol=1e-6)
        return True

    # ------------------------------------------------------------------ combination / editing
    @classmethod
    def cat(cls, trajectories: Sequence[CameraTrajectory]) -> CameraTrajectory:
        """Concatenate trajectories (all with or all without intrinsics, same :attr:`units`).

        Trajectories of another image size are first brought to the first one's size with
        :meth:`at_size` (field-of-view intrinsics keep square pixels; pixel intrinsics are
        rescaled, with a warning when that stretches them). The result has the dtype/device of
        the first trajectory.

        Raises:
            ValueError: empty sequence, mixed presence of intrinsics, or mixed units.
        """
        trajs = list(trajectories)
        if not trajs:
            raise ValueError("trajectories: expected at least one CameraTrajectory")
        for i, t in enumerate(trajs):
            if not isinstance(t, CameraTrajectory):
                raise TypeError(f"trajectories: item {i} is a {type(t).__name__}, expected CameraTrajectory")
        first = trajs[0]
        if len({t.has_intrinsics for t in trajs}) != 1:
            raise ValueError("trajectories: either all or none must have intrinsics")
        units = {t.units for t in trajs}
        if len(units) != 1:
            raise ValueError(f"trajectories: units differ {sorted(units)}; convert presets with "
                             ".in_scene_units(median_depth) before joining them to a trajectory in scene units")
        if first.has_intrinsics:
            trajs = [t.at_size(first.height, first.width) for t in trajs]  # type: ignore[arg-type]
        elif len({(t.height, t.width) for t in trajs}) != 1:
            raise ValueError("trajectories: image sizes differ and there are no intrinsics to rescale")
        dev, dt = first.w2c.device, first.w2c.dtype
        w2c = torch.cat([t.w2c.to(dev, dt) for t in trajs])
        K = None if first.K is None else torch.cat([t.K.to(dev, dt) for t in trajs])  # type: ignore[union-attr]
        return cls._unchecked(w2c, K, first.height, first.width, units=first.units,
                              fov_intrinsics=all(t.fov_intrinsics for t in trajs))

    def __add__(self, other: CameraTrajectory) -> CameraTrajectory:
        return CameraTrajectory.cat([self, other])

    def resample(self, num_frames: int) -> CameraTrajectory:
        """Resample to ``num_frames`` cameras evenly spaced in the frame-index parameter.

        Camera orientations are interpolated by quaternion slerp (shorter arc) and camera centres
        linearly between neighbouring input frames; intrinsics are interpolated linearly. The first
        and last output frames equal the first and last input frames. A single-frame trajectory is
        repeated.

        Raises:
            ValueError: ``num_frames`` < 1.
        """
        num_frames = _check_size(num_frames, "num_frames")
        n = len(self)
        dt = self.w2c.dtype
        if n == 1:
            idx = torch.zeros(num_frames, dtype=torch.long, device=self.device)
            return self[idx]
        pos = torch.linspace(0.0, n - 1.0, num_frames, dtype=torch.float64, device=self.device)
        lo = pos.floor().long().clamp(max=n - 2)
        frac = pos - lo.double()
        c2w = self.c2w.double()
        q = matrix_to_quaternion(c2w[:, :3, :3])
        q_interp = quaternion_slerp(q[lo], q[lo + 1], frac)
        R_c2w = quaternion_to_matrix(q_interp)
        centers = c2w[:, :3, 3]
        c = centers[lo] * (1.0 - frac)[:, None] + centers[lo + 1] * frac[:, None]
        out_c2w = torch.eye(4, dtype=torch.float64, device=self.device).repeat(num_frames, 1, 1)
        out_c2w[:, :3, :3] = R_c2w
        out_c2w[:, :3, 3] = c
        w2c = _invert_rigid(out_c2w)
        # exact endpoints / exact hits of input frames
        exact = frac.abs() < 1e-12
        w2c[exact] = self.w2c.double()[lo[exact]]
        last = (pos - (n - 1)).abs() < 1e-12
        w2c[last] = self.w2c.double()[-1]
        K = None
        if self.K is not None:
            Kd = self.K.double()
            K = Kd[lo] * (1.0 - frac)[:, None, None] + Kd[lo + 1] * frac[:, None, None]
            K[exact] = Kd[lo[exact]]
            K[last] = Kd[-1]
            K = K.to(dt)
        return self._like(w2c.to(dt), K)

    def resized(self, height: int, width: int) -> CameraTrajectory:
        """Intrinsics for the image resized to (height, width): row 0 of K times ``width / self.width``,
        row 1 times ``height / self.height`` (poses unchanged). This is the right K for an image
        that is *stretched* to the new size; :meth:`at_size` is what generation uses.

        Raises:
            ValueError: the trajectory has no intrinsics, or a non-positive size.
        """
        height, width = self._target_size(height, width)
        K = self.K.clone()
        K[:, 0] = K[:, 0] * (width / self.width)
        K[:, 1] = K[:, 1] * (height / self.height)
        out = self._like(self.w2c.clone(), K, height, width)
        out.fov_intrinsics = self.fov_intrinsics and not self._changes_aspect(height, width)
        return out

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        """Checked ``(height, width)`` to bring the intrinsics to (raises without intrinsics)."""
        if self.K is None or self.height is None or self.width is None:
            raise ValueError("self: trajectory has no intrinsics to resize; call with_intrinsics() first")
        return _check_size(height, "height"), _check_size(width, "width")

    def _changes_aspect(self, height: int, width: int) -> bool:
        assert self.height is not None and self.width is not None
        return abs((width / height) / (self.width / self.height) - 1.0) > _ASPECT_RTOL

    def at_size(self, height: int, width: int) -> CameraTrajectory:
        """The trajectory for images of ``(height, width)`` pixels, keeping square pixels where it can.

        * Same size: ``self``.
        * Field-of-view intrinsics (:attr:`fov_intrinsics`: presets, ``fov_deg`` constructors):
          rebuilt for the new size with the same horizontal field of view and the same pixel aspect
          (``fx`` and ``fy`` both times ``width / self.width``), the principal point at the same
          relative position.
        * Pixel intrinsics (from a file: they describe one image): :meth:`resized`, the K of that
          image stretched to the new size; a warning says when the aspect ratio changes (the pixels
          are no longer square: the image is distorted).

        Raises:
            ValueError: the trajectory has no intrinsics, or a non-positive size.
        """
        height, width = self._target_size(height, width)
        if (height, width) == (self.height, self.width):
            return self
        if not self._changes_aspect(height, width):
            return self.resized(height, width)
        if self.fov_intrinsics:
            s = width / self.width
            K = self.K.clone()
            K[:, 0, 0] = K[:, 0, 0] * s
            K[:, 0, 1] = K[:, 0, 1] * s
            K[:, 1, 1] = K[:, 1, 1] * s
            K[:, 0, 2] = K[:, 0, 2] * (width / self.width)
            K[:, 1, 2] = K[:, 1, 2] * (height / self.height)
            return self._like(self.w2c.clone(), K, height, width)
        out = self.resized(height, width)
        logger.warning(
            "camera intrinsics: the K of a %dx%d image is rescaled to %dx%d, another aspect ratio, so the pixels are "
            "no longer square (fx=%.1f, fy=%.1f; the image is stretched). Generate at a size with the image's "
            "aspect ratio (e.g. worldstereo.camera.assign_scale) or give intrinsics for the generation size",
            self.width, self.height, width, height, float(out.K[0, 0, 0]), float(out.K[0, 1, 1]))  # type: ignore[index]
        return out

    def with_intrinsics(self, K: Any = None, *, height: int, width: int, fov_deg: float = 60.0) -> CameraTrajectory:
        """Same poses (and :attr:`units`) with new intrinsics.

        Args:
            K: (3, 3) or (N, 3, 3) pixel intrinsics of a (height, width) image; ``None`` builds
                centred intrinsics with horizontal field of view ``fov_deg`` (:func:`intrinsics_from_fov`,
                then :attr:`fov_intrinsics` is True).
            height, width: image size.
            fov_deg: horizontal field of view used when ``K`` is None.
        """
        from_fov = K is None
        if from_fov:
            K = intrinsics_from_fov(height, width, fov_deg, dtype=self.w2c.dtype, device=self.w2c.device)
        return CameraTrajectory(self.w2c, K, height, width, units=self.units, fov_intrinsics=from_fov)

    def relative_to(self, index: int = 0) -> CameraTrajectory:
        """Re-express poses in the frame of camera ``index`` (that camera becomes the identity):
        ``w2c_i' = w2c_i @ c2w_index``."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__} {index!r:.60}")
        if not -n <= int(index) < n:
            raise IndexError(f"index: {index} out of range for a trajectory of {n} frames")
        ref = self.c2w[int(index)]
        return self._like(self.w2c @ ref, self.K)

    # ------------------------------------------------------------------ scale
    def scaled(self, factor: float) -> CameraTrajectory:
        """Scale the motion about the condition view (frame 0) by ``factor``, keeping every rotation.

        Camera ``i``'s pose relative to frame 0 (``w2c_i @ c2w_0``) keeps its rotation and gets its
        translation multiplied by ``factor``; frame 0 is unchanged. For a trajectory that starts at
        the identity (every preset) this multiplies every translation (and camera centre) by
        ``factor``. Scaling a preset built for a median depth of 1.0 by ``m`` gives the same preset
        built for median depth ``m`` (focus points and radii included).

        Raises:
            ValueError: ``factor`` not a finite number > 0.
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating, np.integer)) or \
                not math.isfinite(float(factor)) or float(factor) <= 0:
            raise ValueError(f"factor: expected a finite number > 0, got {factor!r}")
        w2c = self.w2c.double()
        w2c0 = w2c[0]
        rel = w2c @ _invert_rigid(w2c0)
        rel[:, :3, 3] = rel[:, :3, 3] * float(factor)
        out = rel @ w2c0
        out[0] = w2c0
        out = out.to(self.w2c.dtype)
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"factor: {factor!r} makes the translations overflow {self.w2c.dtype}; expected a "
                             f"smaller factor")
        return self._like(out, None if self.K is None else self.K.clone())

    def in_scene_units(self, median_depth: float) -> CameraTrajectory:
        """This trajectory in scene units, given the condition view's median depth in scene units.

        A ``"median_depth"`` trajectory (a preset) is :meth:`scaled` by ``median_depth`` and
        becomes ``"scene"``; a ``"scene"`` trajectory is returned unchanged.

        Raises:
            ValueError: ``median_depth`` not a finite number > 0.
        """
        if self.units == "scene":
            return self
        out = self.scaled(median_depth)
        out.units = "scene"
        return out

    def fit_to_scene(self, points: Any, K: Any = None, *, height: int | None = None, width: int | None = None,
                     **kwargs: Any) -> CameraTrajectory:
        """Scale the motion (:meth:`scaled`, rotations kept) so that the point-cloud render keeps
        a target coverage on every frame; see :func:`worldstereo.camera.fit.fit_trajectory` for
        the options (``min_coverage``, default
        :data:`~worldstereo.camera.fit.DEFAULT_MIN_COVERAGE`; ``max_scale``; renderer settings).

        Args:
            points: the scene in this trajectory's world frame: a
                :class:`~worldstereo.geometry.PointCloud` or an (N, 3) / (N, 6) tensor / array.
            K: (3, 3) or (N, 3, 3) pixel intrinsics of ``(height, width)`` images to render with
                (default: the trajectory's own).
            height, width: the image size ``K`` refers to (default: the trajectory's).

        Returns:
            The fitted trajectory, in scene units (a ``"median_depth"`` trajectory is first
            converted with the median depth of ``points`` seen from frame 0).
        """
        from .fit import fit_trajectory

        return fit_trajectory(self, points, K, height=height, width=width, **kwargs).trajectory

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_poses(cls, poses: Any, K: Any = None, *, height: int | None = None, width: int | None = None,
                   convention: str = "w2c_opencv", fov_deg: float | None = None) -> CameraTrajectory:
        """Build from (N, 4, 4) or (N, 3, 4) poses in any of :data:`POSE_CONVENTIONS`.

        ``"c2w_opengl"`` (x right, y up, z backward; nerfstudio / Blender) is converted by flipping the
        y and z camera axes. When ``K`` is None but ``fov_deg`` and the size are given, centred
        intrinsics are built.

        Raises:
            ValueError: unknown ``convention`` or invalid poses/intrinsics.
        """
        if convention not in POSE_CONVENTIONS:
            raise ValueError(f"convention: expected one of {POSE_CONVENTIONS}, got {convention!r}")
        P = _as_float_tensor(poses, "poses")
        if P.ndim == 2:
            P = P.unsqueeze(0)
        if P.ndim != 3 or P.shape[-1] != 4 or P.shape[-2] not in (3, 4):
            raise ValueError(f"poses: expected shape (N, 4, 4) or (N, 3, 4), got {tuple(P.shape)}")
        if P.shape[-2] == 3:
            bottom = torch.zeros(P.shape[0], 1, 4, dtype=P.dtype, device=P.device)
            bottom[..., 3] = 1.0
            P = torch.cat([P, bottom], dim=1)
        _validate_w2c(P, "poses")
        if convention.endswith("opengl"):
            flip = _OPENGL_FLIP.to(P.device, P.dtype)
            P = P @ flip if convention.startswith("c2w") else flip @ P
        w2c = _invert_rigid(P) if convention.startswith("c2w") else P
        from_fov = K is None and fov_deg is not None and height is not None and width is not None
        if from_fov:
            K = intrinsics_from_fov(height, width, fov_deg, dtype=w2c.dtype)  # type: ignore[arg-type]
        return cls(w2c, K, height, width, fov_intrinsics=from_fov)

    @classmethod
    def look_at(cls, eyes: Any, targets: Any, up: Any = (0.0, -1.0, 0.0), *, K: Any = None,
                height: int | None = 512, width: int | None = 512, fov_deg: float = 60.0) -> CameraTrajectory:
        """Cameras at ``eyes`` looking at ``targets`` (OpenCV: +z towards the target, +y down).

        Args:
            eyes: (N, 3) or (3,) camera centres (world).
            targets: (N, 3) or (3,) points each camera looks at.
            up: (3,) or (N, 3) world "up" direction; default (0, -1, 0) is up in OpenCV world axes.
                Camera x = normalise(cross(-up, z)), y = cross(z, x): no roll relative to ``up``.
            K, height, width, fov_deg: intrinsics (``K`` or a horizontal field of view); pass
                ``height=None, width=None`` for a trajectory without intrinsics.

        Raises:
            ValueError: an eye coincides with its target, or the view direction is parallel to ``up``.
        """
        from .presets import look_at_w2c

        w2c = look_at_w2c(eyes, targets, up)
        if height is None and width is None:
            if K is not None:
                raise ValueError("height/width: required when K is given")
            return cls(w2c)
        from_fov = K is None
        if from_fov:
            K = intrinsics_from_fov(height, width, fov_deg, dtype=w2c.dtype)  # type: ignore[arg-type]
        return cls(w2c, K, height, width, fov_intrinsics=from_fov)

    @classmethod
    def preset(cls, name: str, **kwargs: Any) -> CameraTrajectory:
        """Preset trajectory by name (see :data:`worldstereo.camera.PRESET_NAMES`), e.g.
        ``CameraTrajectory.preset("orbit", azimuth_deg=45, num_frames=21)``.

        Raises:
            ValueError: unknown ``name``.
        """
        from .presets import PRESET_NAMES

        if not isinstance(name, str) or name not in PRESET_NAMES:
            raise ValueError(f"name: unknown camera preset {name!r}; expected one of {list(PRESET_NAMES)}")
        return getattr(cls, name)(**kwargs)

    # presets ------------------------------------------------------------------------------------
    @classmethod
    def forward(cls, distance: float = 2.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                fov_deg: float = 60.0) -> CameraTrajectory:
        """Move along the camera's +z (viewing direction) by ``distance`` median depths in total
        (units ``"median_depth"``, as every preset)."""
        from .presets import translate

        return translate((0.0, 0.0, 1.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def backward(cls, distance: float = 2.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                 fov_deg: float = 60.0) -> CameraTrajectory:
        """Move along the camera's -z (away from the scene) by ``distance`` in total."""
        from .presets import translate

        return translate((0.0, 0.0, -1.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def left(cls, distance: float = 1.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
             fov_deg: float = 60.0) -> CameraTrajectory:
        """Truck left (camera -x) by ``distance``, orientation fixed."""
        from .presets import translate

        return translate((-1.0, 0.0, 0.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def right(cls, distance: float = 1.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
              fov_deg: float = 60.0) -> CameraTrajectory:
        """Truck right (camera +x) by ``distance``, orientation fixed."""
        from .presets import translate

        return translate((1.0, 0.0, 0.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def up(cls, distance: float = 1.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
           fov_deg: float = 60.0) -> CameraTrajectory:
        """Pedestal up (camera -y in OpenCV axes) by ``distance``, orientation fixed."""
        from .presets import translate

        return translate((0.0, -1.0, 0.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def down(cls, distance: float = 1.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
             fov_deg: float = 60.0) -> CameraTrajectory:
        """Pedestal down (camera +y) by ``distance``, orientation fixed."""
        from .presets import translate

        return translate((0.0, 1.0, 0.0), distance, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def pan_left(cls, angle_deg: float = 30.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                 fov_deg: float = 60.0) -> CameraTrajectory:
        """Yaw in place about the camera y axis so that the view turns left by ``angle_deg``."""
        from .presets import rotate_in_place

        return rotate_in_place(1, angle_deg, num_frames, sign=-1.0, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def pan_right(cls, angle_deg: float = 30.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                  fov_deg: float = 60.0) -> CameraTrajectory:
        """Yaw in place about the camera y axis so that the view turns right by ``angle_deg``."""
        from .presets import rotate_in_place

        return rotate_in_place(1, angle_deg, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def tilt_up(cls, angle_deg: float = 20.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                fov_deg: float = 60.0) -> CameraTrajectory:
        """Pitch in place about the camera x axis so that the view turns up by ``angle_deg``."""
        from .presets import rotate_in_place

        return rotate_in_place(0, angle_deg, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def tilt_down(cls, angle_deg: float = 20.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                  fov_deg: float = 60.0) -> CameraTrajectory:
        """Pitch in place about the camera x axis so that the view turns down by ``angle_deg``."""
        from .presets import rotate_in_place

        return rotate_in_place(0, angle_deg, num_frames, sign=-1.0, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def roll(cls, angle_deg: float = 30.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
             fov_deg: float = 60.0) -> CameraTrajectory:
        """Roll in place about the optical axis by ``angle_deg``: positive turns the camera clockwise
        as seen from behind it (its x axis rotates towards its +y, i.e. down)."""
        from .presets import rotate_in_place

        return rotate_in_place(2, angle_deg, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def zoom_in(cls, factor: float = 2.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                fov_deg: float = 60.0) -> CameraTrajectory:
        """Fixed pose; focal length grows geometrically from f to ``factor * f``."""
        from .presets import zoom

        return zoom(factor, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def zoom_out(cls, factor: float = 2.0, num_frames: int = 16, *, height: int = 512, width: int = 512,
                 fov_deg: float = 60.0) -> CameraTrajectory:
        """Fixed pose; focal length shrinks geometrically from f to ``f / factor``."""
        from .presets import zoom

        if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0:
            return zoom(1.0 / float(factor), num_frames, height=height, width=width, fov_deg=fov_deg)
        return zoom(factor, num_frames, height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def dolly_zoom(cls, distance: float = 0.5, num_frames: int = 16, *, subject_depth: float = 1.0,
                   height: int = 512, width: int = 512, fov_deg: float = 60.0) -> CameraTrajectory:
        """"Vertigo" shot: move forward by ``distance`` while the focal length scales by
        ``(subject_depth - z) / subject_depth`` so that the plane at depth ``subject_depth`` keeps its
        image size (negative ``distance`` moves backward and zooms in)."""
        from .presets import dolly_zoom

        return dolly_zoom(distance, num_frames, subject_depth=subject_depth, height=height, width=width,
                          fov_deg=fov_deg)

    @classmethod
    def orbit(cls, azimuth_deg: float = 30.0, num_frames: int = 16, *, elevation_deg: float = 0.0,
              depth: float = 1.0, height: int = 512, width: int = 512, fov_deg: float = 60.0) -> CameraTrajectory:
        """Orbit about the point ``(0, 0, depth)`` on the initial optical axis, always looking at it.

        Azimuth sweeps 0 -> ``azimuth_deg`` (positive: the camera moves to its right, +x) and
        elevation 0 -> ``elevation_deg`` (positive: the camera rises, -y); the distance to the
        point stays ``depth``."""
        from .presets import orbit

        return orbit(azimuth_deg, num_frames, elevation_deg=elevation_deg, depth=depth, height=height,
                     width=width, fov_deg=fov_deg)

    @classmethod
    def spiral(cls, radius: float = 0.3, num_frames: int = 16, *, revolutions: float = 1.0,
               forward: float = 0.0, focus_depth: float = 1.0, height: int = 512, width: int = 512,
               fov_deg: float = 60.0) -> CameraTrajectory:
        """Spiral: the camera centre circles the initial optical axis with a radius growing linearly
        from 0 to ``radius`` over ``revolutions`` turns (starting to the right, then down), optionally
        advancing ``forward`` along +z, while looking at ``(0, 0, focus_depth)``."""
        from .presets import spiral

        return spiral(radius, num_frames, revolutions=revolutions, forward=forward, focus_depth=focus_depth,
                      height=height, width=width, fov_deg=fov_deg)

    @classmethod
    def eloop(cls, radius_x: float = 0.3, radius_y: float = 0.4, num_frames: int = 21, *, depth: float = 1.0,
              height: int = 512, width: int = 512, fov_deg: float = 60.0) -> CameraTrajectory:
        """Closed elliptic loop in the camera's x-y plane (as the reference ``eloop``): the centre goes
        right, up (-y), left and back down to the start (last frame = first frame) on an ellipse with
        radii ``radius_x`` and ``radius_y`` whose lowest point is the start, looking at
        ``(0, 0, depth)``. Reference values: radii = (0.3, 0.4) x median depth."""
        from .presets import eloop

        return eloop(radius_x, radius_y, num_frames, depth=depth, height=height, width=width, fov_deg=fov_deg)

    # ------------------------------------------------------------------ converters (see formats.py)
    @classmethod
    def from_reference_json(cls, source: PathLike | dict, *, height: int | None = None, width: int | None = None,
                            image_path: PathLike | None = None, dtype: torch.dtype = torch.float32
                            ) -> CameraTrajectory:
        """Read a reference-implementation ``camera.json``.

        See :func:`worldstereo.camera.formats.read_reference_json` for the layouts and how the image
        size is found (explicit size > ``image_path`` > the file's keys > an image next to the file).
        """
        from .formats import read_reference_json

        return read_reference_json(source, height=height, width=width, image_path=image_path, dtype=dtype)

    def to_reference_json(self, path: PathLike | None = None, *, layout: str = "trajectory",
                          include_size: bool = True, extra: dict | None = None) -> dict:
        """Reference ``camera.json`` dict (written atomically to ``path`` when given)."""
        from .formats import write_reference_json

        return write_reference_json(self, path, layout=layout, include_size=include_size, extra=extra)

    @classmethod
    def from_transforms_json(cls, source: PathLike | dict, *, dtype: torch.dtype = torch.float32
                             ) -> CameraTrajectory:
        """Read a nerfstudio / instant-ngp ``transforms.json`` (OpenGL c2w)."""
        from .formats import read_transforms_json

        return read_transforms_json(source, dtype=dtype)

    def to_transforms_json(self, path: PathLike | None = None, *, file_paths: Sequence[str] | None = None) -> dict:
        """nerfstudio ``transforms.json`` dict (written atomically to ``path`` when given)."""
        from .formats import write_transforms_json

        return write_transforms_json(self, path, file_paths=file_paths)

    @classmethod
    def from_realestate10k(cls, source: PathLike | str, *, height: int, width: int,
                           dtype: torch.dtype = torch.float32) -> CameraTrajectory:
        """Read a RealEstate10K camera text file (normalised intrinsics -> pixels of height x width)."""
        from .formats import read_realestate10k

        return read_realestate10k(source, height=height, width=width, dtype=dtype)

    def to_realestate10k(self, path: PathLike | None = None, *, url: str = "",
                         timestamps: Sequence[int] | None = None) -> str:
        """RealEstate10K text (written atomically to ``path`` when given)."""
        from .formats import write_realestate10k

        return write_realestate10k(self, path, url=url, timestamps=timestamps)

    @classmethod
    def from_npz(cls, path: PathLike, *, dtype: torch.dtype | None = None) -> CameraTrajectory:
        """Read an ``.npz`` with ``w2c``, ``intrinsics``, ``image_height``, ``image_width``."""
        from .formats import read_npz

        return read_npz(path, dtype=dtype)

    def to_npz(self, path: PathLike) -> None:
        """Write ``w2c``, ``intrinsics``, ``image_height``, ``image_width`` to ``path`` (atomic)."""
        from .formats import write_npz

        write_npz(self, path)

    @classmethod
    def load(cls, path: PathLike, *, dtype: torch.dtype | None = None) -> CameraTrajectory:
        """Read our own JSON trajectory file (schema ``trajectory.schema.json``)."""
        from .formats import load_trajectory

        return load_trajectory(path, dtype=dtype)

    def save(self, path: PathLike) -> None:
        """Write our own JSON trajectory file (atomic; schema ``trajectory.schema.json``)."""
        from .formats import save_trajectory

        save_trajectory(self, path)
