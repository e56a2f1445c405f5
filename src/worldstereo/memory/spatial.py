"""`SpatialStereoMemory`: a bank of generated frames with cameras, and reference retrieval.

Reference: ``SimpleMemoryBank`` (reference-implementation.md §5.2-5.4). The bank starts with the
condition view; after each generated clip ``frames_per_update`` of its frames are added
(``sample_align_nframe``: never frame 0, the last frame always, larger gaps first). For a new
target trajectory every target frame retrieves its best bank entry (frustum overlap, or
correspondence visibility), the distinct entries become the references, and when there are more
than ``max_references`` of them a quality-aware farthest-point selection keeps that many.

Conventions: ``w2c`` world-to-camera 4x4 (OpenCV axes: x right, y down, z forward), ``K`` 3x3 in
pixels of the entry's own image, images float (3,H,W) in [0,1]. Entries are stored on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera.keyframes import sample_align_nframe
from ..config_checks import check_choice, check_int
from ..io.atomic import atomic_open
from ..io.errors import InputFileError, reading
from ..io.files import finite_matrix, finite_number, read_json_file
from ..io.image import load_image, rescale_intrinsics, resize_image, save_image
from ..io.paths import ensure_folder, safe_child, unique_names
from ._cameras import per_frame_cameras
from .limits import MEMORY_CONFIG_LIMITS
from .retrieval import CameraSelector, ImageFeatureFn, RetrievalResult, retrieve
from worldstereo.errors import MissingPathError

__all__ = ["MemoryEntry", "References", "SpatialStereoMemory"]

logger = logging.getLogger(__name__)

RETRIEVAL_METHODS = ("fov_overlap", "correspondence")


@dataclass
class MemoryEntry:
    """One frame of the bank.

    Attributes:
        image: (3,H,W) float32 in [0,1] (CPU).
        w2c: (4,4) float64 world-to-camera, OpenCV axes.
        K: (3,3) float64 pixel intrinsics of ``image``.
        name: unique name, e.g. ``"condition"`` or ``"clip0/0020"``.
        pinned: never evicted (the condition view).
    """

    image: Tensor
    w2c: Tensor
    K: Tensor
    name: str
    pinned: bool = False

    @property
    def height(self) -> int:
        return int(self.image.shape[-2])

    @property
    def width(self) -> int:
        return int(self.image.shape[-1])


@dataclass
class References:
    """Reference views for one target trajectory.

    Attributes:
        images: (R,3,H,W) float32 in [0,1], resized to the requested generation size.
        w2c: (R,4,4) float32 world-to-camera (OpenCV).
        K: (R,3,3) float32 intrinsics rescaled to the generation size.
        ref_index: (R,) int64 slot of each reference: reference k is the bank entry first retrieved
            by target frame ``ref_index[k] + 1`` (the RoPE position it receives in the model).
        bank_indices: (R,) int64 position of each reference in the bank at retrieval time.
        names: bank names of the references.
        retrieval: the full retrieval bookkeeping (per-frame choices, scores, selection).
    """

    images: Tensor
    w2c: Tensor
    K: Tensor
    ref_index: Tensor
    bank_indices: Tensor
    names: list[str] = field(default_factory=list)
    retrieval: RetrievalResult | None = None

    def __len__(self) -> int:
        return int(self.ref_index.shape[0])


class _ResizedBank:
    """Lazy ``bank[j] -> image resized to (height, width)`` used by the camera selector."""

    def __init__(self, entries: Sequence[MemoryEntry], height: int, width: int) -> None:
        self._entries = entries
        self._size = (height, width)
        self._cache: dict[int, Tensor] = {}

    def __getitem__(self, j: int) -> Tensor:
        if j not in self._cache:
            self._cache[j] = resize_image(self._entries[j].image, *self._size)
        return self._cache[j]

    def __len__(self) -> int:
        return len(self._entries)


class SpatialStereoMemory:
    """Spatial-stereo memory: bank of frames + cameras with frustum-overlap retrieval.

    Args:
        memory_size: maximum number of frames kept (>= 1). When exceeded, the oldest frames that are
            not pinned are evicted; the condition view (the first frame added to an empty bank, or
            any frame added with ``pin=True``) is never evicted.
        max_references: maximum number of reference views returned by :meth:`retrieve` (reference: 8).
        frames_per_update: frames of each generated clip added by :meth:`update_from_clip`
            (reference: 8 of 21, ``[3, 6, 9, 12, 14, 16, 18, 20]``).
        retrieval: ``"fov_overlap"`` (reference method) or ``"correspondence"`` (needs the rendered
            target depth at :meth:`retrieve`).
        num_correspondences: pixels sampled per target view by the correspondence method.
        image_feature_model: image features of the reference selector: ``None`` (light-weight
            descriptor), a DINOv2 directory / model id, or a callable ``(N,3,H,W) -> (N,D)``.
        nframe: when a target trajectory has more than ``nframe`` poses, every 4th pose is used
            for retrieval (reference: 81 poses -> 21 keyframes). ``None``: use every pose.
        seed: seed of the correspondence pixel sampling (deterministic retrieval).
    """

    def __init__(
        self,
        memory_size: int = 1024,
        max_references: int = 8,
        frames_per_update: int = 8,
        retrieval: str = "fov_overlap",
        num_correspondences: int = 256,
        image_feature_model: str | Path | ImageFeatureFn | None = None,
        *,
        nframe: int | None = None,
        seed: int = 0,
    ) -> None:
        lim = MEMORY_CONFIG_LIMITS
        for name, value in (("memory_size", memory_size), ("max_references", max_references),
                            ("frames_per_update", frames_per_update), ("num_correspondences", num_correspondences)):
            check_int(name, value, *lim[name])
        check_choice("retrieval", retrieval, RETRIEVAL_METHODS)
        check_int("nframe", nframe, 2, 100_000, allow_none=True)
        check_int("seed", seed, 0, 2**63 - 1)
        if image_feature_model is not None and not isinstance(image_feature_model, (str, os.PathLike)) \
                and not callable(image_feature_model):
            raise TypeError(f"image_feature_model: expected None, a DINOv2 folder / model id, or a callable "
                            f"(N,3,H,W) -> (N,D), got {type(image_feature_model).__name__}")
        self.memory_size = memory_size
        self.max_references = max_references
        self.frames_per_update = frames_per_update
        self.retrieval = retrieval
        self.num_correspondences = num_correspondences
        self.image_feature_model = image_feature_model
        self.nframe = nframe
        self.seed = int(seed)
        self.selector = CameraSelector(image_feature_model)
        self._entries: list[MemoryEntry] = []
        self._clip_counter = 0
        self._name_counter = 0

    # -- bank access ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> list[MemoryEntry]:
        """The bank entries, oldest first (a copy of the list; entries are shared)."""
        return list(self._entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    @property
    def w2c(self) -> Tensor:
        """(N,4,4) float64 world-to-camera of the bank."""
        return torch.stack([e.w2c for e in self._entries]) if self._entries else torch.zeros(0, 4, 4, dtype=torch.float64)

    @property
    def K(self) -> Tensor:
        """(N,3,3) float64 intrinsics, each in pixels of its own entry's image."""
        return torch.stack([e.K for e in self._entries]) if self._entries else torch.zeros(0, 3, 3, dtype=torch.float64)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of every entry."""
        return [(e.height, e.width) for e in self._entries]

    def clear(self) -> None:
        """Remove every entry (including the condition view)."""
        self._entries.clear()
        self._clip_counter = 0

    # -- adding -----------------------------------------------------------------------------

    def add(
        self,
        images: Tensor,
        w2c: Tensor,
        K: Tensor,
        names: Sequence[str] | None = None,
        *,
        pin: bool | None = None,
    ) -> list[str]:
        """Add frames to the bank, then evict down to ``memory_size``.

        Args:
            images: (N,3,H,W) or (3,H,W) float in [0,1].
            w2c: (N,4,4) or (4,4) world-to-camera (OpenCV).
            K: (N,3,3) or (3,3) pixel intrinsics of ``images``.
            names: unique names (default ``"frame_<counter>"``).
            pin: pin the added frames (never evicted). Default: pin only the first frame added to
                an empty bank (the condition view).

        Returns:
            The names of the added frames.

        Raises:
            ValueError: bad shapes or values, or a name already in the bank.
        """
        if not isinstance(images, (Tensor, np.ndarray)):
            raise TypeError(f"images: expected a float tensor (N,3,H,W) or (3,H,W) in [0,1], got {type(images).__name__}")
        imgs = torch.as_tensor(images)
        if imgs.ndim == 3:
            imgs = imgs.unsqueeze(0)
        if imgs.ndim != 4 or imgs.shape[1] != 3 or not imgs.is_floating_point():
            raise ValueError(f"images: expected float (N,3,H,W) or (3,H,W) in [0,1], got {tuple(imgs.shape)} {imgs.dtype}")
        n = imgs.shape[0]
        if not torch.isfinite(imgs).all():
            raise ValueError("images: contains NaN or infinite values")
        if imgs.numel() and (float(imgs.min()) < -1e-3 or float(imgs.max()) > 1 + 1e-3):
            raise ValueError(f"images: expected values in [0, 1], got range [{float(imgs.min()):.4g}, "
                             f"{float(imgs.max()):.4g}]")
        w, k = per_frame_cameras(w2c, K, n)
        if not (torch.isfinite(w).all() and torch.isfinite(k).all()):
            raise ValueError("w2c/K: contain non-finite values")
        if names is None:
            names = []
            for _ in range(n):
                names.append(f"frame_{self._name_counter:06d}")
                self._name_counter += 1
        names = [str(x) for x in names]
        if len(names) != n:
            raise ValueError(f"names: expected {n} names, got {len(names)}")
        existing = set(self.names)
        dup = [x for x in names if x in existing] + [x for i, x in enumerate(names) if x in names[:i]]
        if dup:
            raise ValueError(f"names: {sorted(set(dup))} already used in the bank (names must be unique)")
        pin_first = pin is None and not self._entries
        for i in range(n):
            self._entries.append(
                MemoryEntry(
                    image=imgs[i].detach().to("cpu", torch.float32).clamp(0, 1).contiguous(),
                    w2c=w[i].detach().cpu().clone(),
                    K=k[i].detach().cpu().clone(),
                    name=names[i],
                    pinned=bool(pin) if pin is not None else (pin_first and i == 0),
                )
            )
        self._evict()
        return names

    def _evict(self) -> None:
        excess = len(self._entries) - self.memory_size
        if excess <= 0:
            return
        drop: set[int] = set()
        for j, e in enumerate(self._entries):
            if len(drop) == excess:
                break
            if not e.pinned:
                drop.add(j)
        if len(drop) < excess:
            logger.warning("SpatialStereoMemory: %d pinned frames exceed memory_size=%d; keeping them",
                           sum(e.pinned for e in self._entries), self.memory_size)
        self._entries = [e for j, e in enumerate(self._entries) if j not in drop]
        logger.debug("SpatialStereoMemory: evicted %d frames, %d kept", len(drop), len(self._entries))

    def update_from_clip(
        self,
        frames: Tensor,
        trajectory: Any,
        K: Tensor | None = None,
        *,
        prefix: str | None = None,
    ) -> list[str]:
        """Add ``frames_per_update`` frames of a generated clip (reference ``update_memory``).

        The frames are ``sample_align_nframe(T, min(frames_per_update, T - 1))``: never frame 0 (the
        condition view of that clip), the last frame always, larger gaps first.

        Args:
            frames: (T,3,H,W) float in [0,1].
            trajectory: the clip's cameras: a ``CameraTrajectory`` (its intrinsics are rescaled to
                the frame size when it records an image size) or a (T,4,4) w2c tensor with ``K``.
            K: (T,3,3) or (3,3) intrinsics in pixels of ``frames`` when ``trajectory`` is a tensor.
            prefix: name prefix; entries are named ``"<prefix>/<frame:04d>"`` (default ``clip<k>``).

        Returns:
            The names of the added frames (empty for a 1-frame clip).
        """
        fr = torch.as_tensor(frames)
        if fr.ndim != 4 or fr.shape[1] != 3:
            raise ValueError(f"frames: expected (T,3,H,W) float in [0,1], got shape {tuple(fr.shape)}")
        T, _, H, W = fr.shape
        if hasattr(trajectory, "w2c"):
            w2c = torch.as_tensor(trajectory.w2c, dtype=torch.float64)
            tk = getattr(trajectory, "K", None)
            if K is None:
                if tk is None:
                    raise ValueError("trajectory: has no intrinsics; pass K")
                K = torch.as_tensor(tk, dtype=torch.float64)
                th, tw = getattr(trajectory, "height", None), getattr(trajectory, "width", None)
                if th and tw and (th, tw) != (H, W):
                    K = rescale_intrinsics(K, (int(th), int(tw)), (H, W))
        else:
            w2c = torch.as_tensor(trajectory, dtype=torch.float64)
            if K is None:
                raise ValueError("K: required when trajectory is a w2c tensor")
        if w2c.ndim != 3 or w2c.shape[0] != T:
            raise ValueError(f"trajectory: expected {T} poses (one per frame), got shape {tuple(w2c.shape)}")
        Kt = torch.as_tensor(K, dtype=torch.float64)
        if Kt.ndim == 2:
            Kt = Kt.unsqueeze(0).expand(T, 3, 3)
        if T < 2:
            return []
        idx = sample_align_nframe(T, min(self.frames_per_update, T - 1))
        prefix = prefix if prefix is not None else f"clip{self._clip_counter}"
        self._clip_counter += 1
        sel = torch.tensor(idx)
        return self.add(fr[sel], w2c[sel], Kt[sel], names=[f"{prefix}/{i:04d}" for i in idx], pin=False)

    # -- retrieval --------------------------------------------------------------------------

    def retrieve(
        self,
        target_w2c: Tensor,
        target_K: Tensor,
        height: int,
        width: int,
        *,
        target_depth: Tensor | None = None,
        view_id: str | None = None,
        traj_id: str | None = None,
    ) -> References:
        """Reference views for a target trajectory.

        Args:
            target_w2c: (F,4,4) world-to-camera (frame 0 = the condition view of the new clip), or
                a ``CameraTrajectory`` (only its poses are used).
            target_K: (F,3,3) or (3,3) pixel intrinsics at the generation size ``(height, width)``.
            height, width: generation size; references are resized to it (bicubic, antialiased) and
                their intrinsics rescaled.
            target_depth: (F,H,W) rendered z-depth (0 = hole); required by ``"correspondence"``.
            view_id, traj_id: optional trajectory names enabling the reference's panorama shortcuts
                (see :func:`~worldstereo.memory.retrieval.shortcut_candidates`).

        Returns:
            :class:`References` (R <= ``max_references``).

        Raises:
            RuntimeError: the bank is empty.
            ValueError: bad shapes / sizes, or ``"correspondence"`` without ``target_depth``.
        """
        if not self._entries:
            raise RuntimeError("SpatialStereoMemory.retrieve: the bank is empty; add the condition view first")
        if hasattr(target_w2c, "w2c"):  # a CameraTrajectory
            target_w2c = target_w2c.w2c
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.retrieval == "correspondence" and target_depth is None:
            raise ValueError("target_depth: required when retrieval='correspondence'")
        bank_h = [e.height for e in self._entries]
        bank_w = [e.width for e in self._entries]
        gen = torch.Generator().manual_seed(self.seed)
        res = retrieve(
            target_w2c, target_K, self.w2c, self.K,
            target_size=(width, height), bank_size=(bank_w, bank_h),
            nframe=self.nframe, max_references=self.max_references, method=self.retrieval,
            bank_names=self.names, view_id=view_id, traj_id=traj_id,
            bank_images=_ResizedBank(self._entries, height, width), selector=self.selector,
            target_depth=target_depth, num_correspondences=self.num_correspondences, generator=gen,
        )
        idx = res.ref_bank_indices
        ents = [self._entries[j] for j in idx]
        images = torch.stack([resize_image(e.image, height, width) for e in ents])
        K = torch.stack([rescale_intrinsics(e.K, (e.height, e.width), (height, width)) for e in ents])
        return References(
            images=images.float(),
            w2c=torch.stack([e.w2c for e in ents]).float(),
            K=K.float(),
            ref_index=torch.tensor(res.ref_index, dtype=torch.long),
            bank_indices=torch.tensor(idx, dtype=torch.long),
            names=[e.name for e in ents],
            retrieval=res,
        )

    # -- export / import --------------------------------------------------------------------

    def export_worldmirror(self, out_dir: str | Path) -> Path:
        """Write the bank in the WorldMirror input layout (reference ``apply_worldmirror``, §5.4).

        Writes ``images/<camera_id>.png``, ``cameras.json`` = ``{"num_cameras", "extrinsics":
        [{"camera_id", "matrix": c2w 4x4}], "intrinsics": [{"camera_id", "matrix": K 3x3}]}``,
        ``name_map.json`` (bank name -> zero-padded index in sorted camera-id order) and
        ``memory.json`` (bank order, names, pinned flags; used by :meth:`load_worldmirror`).
        Camera ids are the names made safe file names (``worldstereo.io.paths.unique_names``: ``/``
        and other unsafe characters become ``-``, duplicates get ``_1``, ``_2`` ...); every file lies
        inside ``out_dir`` and is written atomically.

        Returns:
            ``out_dir`` as a Path.
        """
        out = ensure_folder(out_dir, "out_dir")
        ids = unique_names([e.name for e in self._entries], what="memory bank names")
        images = safe_child(out, "images", is_folder=True)
        ensure_folder(images, "out_dir")
        for cid, e in zip(ids, self._entries):
            save_image(safe_child(out, "images", f"{cid}.png", what="camera id"), e.image)
        cameras = {
            "num_cameras": len(ids),
            "extrinsics": [{"camera_id": cid, "matrix": torch.linalg.inv(e.w2c).tolist()} for cid, e in zip(ids, self._entries)],
            "intrinsics": [{"camera_id": cid, "matrix": e.K.tolist()} for cid, e in zip(ids, self._entries)],
        }
        order = sorted(range(len(ids)), key=lambda j: ids[j])
        width = max(4, len(str(max(len(ids) - 1, 0))))
        name_map = {self._entries[j].name: f"{rank:0{width}d}" for rank, j in enumerate(order)}
        memory = {"entries": [{"name": e.name, "camera_id": cid, "pinned": e.pinned} for cid, e in zip(ids, self._entries)]}
        for fname, obj in (("cameras.json", cameras), ("name_map.json", name_map), ("memory.json", memory)):
            with atomic_open(safe_child(out, fname), "w", encoding="utf-8") as fh:
                json.dump(obj, fh, indent=1)
        logger.info("SpatialStereoMemory: exported %d frames to %s", len(ids), out)
        return out

    @classmethod
    def load_worldmirror(cls, in_dir: str | Path, **config: Any) -> "SpatialStereoMemory":
        """Rebuild a memory from a directory written by :meth:`export_worldmirror`.

        Bank order, names and pinned flags come from ``memory.json`` when present; otherwise the
        order of ``cameras.json`` is used, names come from ``name_map.json`` (or are the camera
        ids) and the first camera is pinned. Images are re-read from the PNGs (8-bit).

        Args:
            in_dir: the exported directory.
            **config: constructor arguments of :class:`SpatialStereoMemory`.
        """
        d = Path(in_dir)
        cam_path = d / "cameras.json"
        if not cam_path.is_file():
            raise MissingPathError(f"in_dir: {str(cam_path)!r} not found (not a WorldMirror export)")
        cams = read_json_file(cam_path, "in_dir", "WorldMirror cameras.json")
        with reading(cam_path, "WorldMirror cameras.json"):
            if not isinstance(cams, dict) or not isinstance(cams.get("extrinsics"), list) \
                    or not isinstance(cams.get("intrinsics"), list):
                raise InputFileError(cam_path, "expected an object with 'extrinsics' and 'intrinsics' lists")
            c2w = {str(x["camera_id"]): torch.from_numpy(finite_matrix(x["matrix"], (4, 4), f"extrinsics[{i}].matrix"))
                   for i, x in enumerate(cams["extrinsics"])}
            Ks = {str(x["camera_id"]): torch.from_numpy(finite_matrix(x["matrix"], (3, 3), f"intrinsics[{i}].matrix"))
                  for i, x in enumerate(cams["intrinsics"])}
            if "num_cameras" in cams:
                finite_number(cams["num_cameras"], "num_cameras", path=cam_path, integer=True, minimum=len(c2w),
                              maximum=len(c2w))
        if (d / "memory.json").is_file():
            mem_doc = read_json_file(d / "memory.json", "in_dir", "memory.json")
            with reading(d / "memory.json", "memory.json"):
                rows = mem_doc["entries"]
                if not isinstance(rows, list) or not all(isinstance(r, dict) and "camera_id" in r for r in rows):
                    raise InputFileError(d / "memory.json", "expected a list of objects with 'camera_id'",
                                         field="entries")
        else:
            inv: dict[str, str] = {}
            if (d / "name_map.json").is_file():
                nm = read_json_file(d / "name_map.json", "in_dir", "name_map.json")
                with reading(d / "name_map.json", "name_map.json"):
                    by_rank = {int(v): k for k, v in nm.items()}
                    inv = {cid: by_rank.get(r, cid) for r, cid in enumerate(sorted(c2w))}
            rows = [{"name": inv.get(str(x["camera_id"]), str(x["camera_id"])), "camera_id": str(x["camera_id"]),
                     "pinned": i == 0} for i, x in enumerate(cams["extrinsics"])]
        mem = cls(**config)
        for r in rows:
            cid = str(r["camera_id"])
            if cid not in c2w or cid not in Ks:
                raise InputFileError(cam_path, f"camera {cid!r} lacks an extrinsic or intrinsic entry")
            try:
                img_path = safe_child(d, "images", f"{cid}.png", what="camera_id")
            except ValueError as exc:
                raise InputFileError(cam_path, str(exc)) from None
            if not img_path.is_file():
                raise InputFileError(cam_path, f"the image images/{cid}.png of camera {cid!r} is missing")
            img = load_image(img_path, name=f"images/{cid}.png")
            with reading(cam_path, "WorldMirror cameras.json"):
                w2c = torch.linalg.inv(c2w[cid])
                mem._entries.append(MemoryEntry(img.float(), w2c, Ks[cid], str(r.get("name", cid)),
                                                bool(r.get("pinned", False))))
        mem._evict()
        return mem

