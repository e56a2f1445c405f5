"""Several GPUs and several machines: context, CFG, FSDP2 and data parallelism on ``torch.distributed``.

Launch one process per GPU with ``torchrun`` (which also spans machines), then::

    import worldstereo
    from worldstereo import parallel

    device = parallel.init_distributed()            # from torchrun's environment
    model = worldstereo.WorldStereo.from_pretrained(path, torch_dtype=torch.bfloat16)  # same weights everywhere
    state = parallel.enable_context_parallel(model, mode="ulysses")
    video = worldstereo.generate_video(model, image, trajectory, ..., save_path="out.mp4")
    # every rank returns the same video; only rank 0 writes out.mp4

The ranks are laid out on a 5-dimensional device mesh ``("dp", "replicate", "cfg", "ring", "ulysses")``
(outermost first, so consecutive ranks — the GPUs of one machine — work on the same video):

* **group**: the ``replicate × cfg × ring × ulysses`` ranks that generate one video together
  (``group_size``, default: every rank). Every rank of a group returns the same video; the group's
  rank 0 (the *writer*) writes files. ``replicate`` > 1 only in mode ``"none"``: ranks that compute
  the same passes (useful with FSDP, which shards the weights over the whole group).
* **context parallelism** (``ring × ulysses``, modes ``"ulysses"`` / ``"ring"``): diffusers'
  context-parallel hooks (``ModelMixin.enable_parallelism``) with the transformer's plan
  (:func:`worldstereo.models.transformer.context_parallel_plan`): the backbone tokens, the ControlNet
  tokens and the memory variant's stereo-stitched reference tokens are split over the ranks along
  the sequence, self-attention runs Ulysses (all-to-all, heads split) or ring attention (key/value
  blocks passed around), and the output is gathered. The token counts ``F·h'·w'`` and ``R·h'·w'``
  must divide by the degree, and for Ulysses the head counts too (clear error otherwise, or
  ``ulysses_anything=True``). Ring attention needs an attention backend that returns the log-sum-exp
  (``_native_cudnn`` is chosen on CUDA; ``flash`` / ``_native_flash`` work too): not on the CPU.
* **CFG parallelism** (``cfg`` = 2, modes ``"cfg"``, ``"cfg+ulysses"``, ``"cfg+ring"``): the
  conditional and the unconditional pass of classifier-free guidance run on different ranks at the
  same time and their velocities are exchanged with ``all_gather`` (see :class:`CFGParallel`);
  ``"cfg+ulysses"`` with ``group_size = 2·U`` runs each pass with ``U``-way Ulysses. Without guidance
  (the distilled DMD variant, ``guidance_scale <= 1``) both halves compute the same pass.
* **FSDP2** (``fsdp=True``): ``torch.distributed.fsdp.fully_shard`` over the group shards the
  weights of the transformer (each backbone and ControlNet block, then the rest) and of the text
  encoder (each T5 block, then the rest), for GPUs that cannot hold a full copy: each rank keeps
  ``1/group_size`` of those weights and gathers one block at a time. Parameter dtypes are kept
  (the float32 keep-modules stay float32), so the numbers are those of the unsharded model.
  Combinable with every mode.
* **data parallelism** (``dp = world_size / group_size``): groups work on different videos; used by
  :func:`worldstereo.batch.run_batch` (``worldstereo batch``), which spreads the jobs over the groups.

The keyframe VAE decode is split over the group too (each rank decodes ``F / group_size`` frames,
then ``all_gather``); frames are decoded one at a time anyway, so this is exact.

Every rank must load identical weights and call the same functions with the same arguments (same
seed): noise is drawn on the CPU from the seed, so it is identical everywhere.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh

from .devices import check_device
from .errors import UnavailableError

__all__ = [
    "PARALLEL_MODES",
    "CFGParallel",
    "ParallelState",
    "init_distributed",
    "launched_by_torchrun",
    "enable_context_parallel",
    "shard_model",
    "parallel_state",
    "is_writer",
    "decode_split",
]

logger = logging.getLogger(__name__)

#: modes of :func:`enable_context_parallel` (``"none"``: no splitting of one video — FSDP alone, or
#: data parallelism only)
PARALLEL_MODES: tuple[str, ...] = ("ulysses", "ring", "cfg", "cfg+ulysses", "cfg+ring", "none")
#: names of the device-mesh dimensions, outermost first
MESH_DIMS: tuple[str, ...] = ("dp", "replicate", "cfg", "ring", "ulysses")
#: attribute of the model holding its :class:`ParallelState`
_STATE_ATTR = "_worldstereo_parallel"
#: attention backend chosen for ring attention on CUDA (returns the log-sum-exp ring attention needs)
RING_ATTENTION_BACKEND = "_native_cudnn"


# ------------------------------------------------------------------------------------ launching
def launched_by_torchrun() -> bool:
    """True when the process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _rank_device() -> torch.device:
    """This rank's device: the current CUDA device when the process group uses NCCL, else the CPU."""
    if dist.is_initialized() and torch.cuda.is_available() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> torch.device:
    """Initialise ``torch.distributed`` from ``torchrun``'s environment and return this rank's device.

    With CUDA, the process uses GPU ``LOCAL_RANK`` and the backend ``"cpu:gloo,cuda:nccl"`` (as the
    reference); without, ``"gloo"`` on the CPU. Does nothing (returns the device) when a process
    group already exists.

    Args:
        backend: ``torch.distributed`` backend string (default as above).

    Raises:
        UnavailableError (a ``RuntimeError`` and a ``ValueError``): not started by ``torchrun`` (no
            ``RANK`` / ``WORLD_SIZE`` in the environment), or ``torch.distributed`` is unavailable in
            this PyTorch build.
    """
    if backend is not None and (not isinstance(backend, str) or not backend.strip()):
        raise TypeError(f"backend: expected None or a torch.distributed backend string such as 'gloo' or "
                        f"'cpu:gloo,cuda:nccl', got {backend!r}")
    if not dist.is_available():
        raise UnavailableError("torch.distributed is not available in this PyTorch build")
    if dist.is_initialized():
        return _rank_device()
    if not launched_by_torchrun():
        raise UnavailableError("parallel: no process group and no torchrun environment (RANK, WORLD_SIZE); launch with "
                           "`torchrun --nproc-per-node N -m worldstereo ...` (or call "
                           "torch.distributed.init_process_group yourself)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UnavailableError(f"parallel: LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA "
                               f"device(s) are visible; start at most that many processes per machine")
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend or "cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend=backend or "gloo")
    device = _rank_device()
    logger.info("torch.distributed: rank %d of %d on %s (%s)", dist.get_rank(), dist.get_world_size(), device,
                dist.get_backend())
    return device


# ---------------------------------------------------------------------------------------- state
class CFGParallel:
    """The two classifier-free-guidance passes on two ranks: rank 0 of the ``cfg`` mesh dimension
    runs the conditional pass, rank 1 the unconditional one; :meth:`gather` exchanges the results.

    The sampling loop (:func:`worldstereo.sampling.denoise`, argument ``cfg_parallel``) uses it.

    Attributes:
        branch: ``"cond"`` or ``"uncond"``: the pass this rank runs.
    """

    def __init__(self, group: Any, rank: int) -> None:
        if rank not in (0, 1):
            raise ValueError(f"rank: expected 0 (conditional) or 1 (unconditional), got {rank}")
        self.group = group
        self.branch = "cond" if rank == 0 else "uncond"

    def gather(self, velocity: Tensor) -> tuple[Tensor, Tensor]:
        """``(v_cond, v_uncond)`` from this rank's ``velocity`` and the other rank's (``all_gather``)."""
        local = velocity.contiguous()
        parts = [torch.empty_like(local) for _ in range(2)]
        dist.all_gather(parts, local, group=self.group)
        return parts[0], parts[1]


@dataclass(frozen=True)
class ParallelState:
    """How the ranks share the work (the result of :func:`enable_context_parallel`, stored on the model).

    Attributes:
        mode: one of :data:`PARALLEL_MODES`.
        rank, world_size: global rank and number of processes.
        group_size, group_rank: ranks generating one video together, and this rank's index among them.
        data_parallel_size, data_parallel_rank: number of groups and this rank's group.
        replicate_degree, cfg_degree, ring_degree, ulysses_degree: the mesh sizes inside a group
            (``group_size = replicate · cfg · ring · ulysses``; ``replicate`` > 1 only in mode ``"none"``).
        fsdp: weights of the transformer and text encoder sharded over the group.
        device: this rank's device.
        mesh: the ``("dp", "replicate", "cfg", "ring", "ulysses")`` device mesh.
        group_mesh: the group's ranks as a 1-D mesh (the group dimensions flattened; FSDP shards over it).
        cfg_parallel: the guidance-pass exchange when ``cfg_degree == 2``, else None.
    """

    mode: str
    rank: int
    world_size: int
    group_size: int
    group_rank: int
    data_parallel_size: int
    data_parallel_rank: int
    replicate_degree: int
    cfg_degree: int
    ring_degree: int
    ulysses_degree: int
    fsdp: bool
    device: torch.device
    mesh: Any = field(repr=False, compare=False)
    group_mesh: Any = field(repr=False, compare=False)
    cfg_parallel: CFGParallel | None = field(default=None, repr=False, compare=False)

    @property
    def is_writer(self) -> bool:
        """True on the rank that writes the group's files (group rank 0)."""
        return self.group_rank == 0

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description (for ``summary.json``; ``transformer_calls`` there count the
        passes of the writing rank: half of them with CFG parallelism)."""
        return {"mode": self.mode, "world_size": self.world_size, "group_size": self.group_size,
                "data_parallel_size": self.data_parallel_size, "cfg": self.cfg_degree, "ring": self.ring_degree,
                "ulysses": self.ulysses_degree, "fsdp": self.fsdp}

    @property
    def context_parallel_degree(self) -> int:
        """Ranks splitting the tokens of one pass (``ring · ulysses``)."""
        return self.ring_degree * self.ulysses_degree

    @property
    def group_process_group(self) -> Any:
        """The process group of this rank's group (None when the group is one rank)."""
        if self.group_size == 1:
            return None
        return self.group_mesh.get_group()


def parallel_state(model: Any) -> ParallelState | None:
    """The :class:`ParallelState` applied to ``model`` by :func:`enable_context_parallel`, else None."""
    state = getattr(model, _STATE_ATTR, None)
    return state if isinstance(state, ParallelState) else None


def is_writer(model: Any) -> bool:
    """Whether this process writes the files of ``model``'s generations: always without
    parallelism, else only on rank 0 of its group (see :attr:`ParallelState.is_writer`)."""
    state = parallel_state(model)
    return state is None or state.is_writer


def _group_mesh(mesh: Any) -> Any:
    return mesh["replicate", "cfg", "ring", "ulysses"]._flatten("group")


# -------------------------------------------------------------------------------------- enabling
def _parse_mode(mode: str, group_size: int) -> tuple[int, int, int, int]:
    """``(replicate, cfg, ring, ulysses)`` degrees of ``mode`` for a group of ``group_size`` ranks."""
    cfg = 2 if mode.startswith("cfg") else 1
    if group_size % cfg:
        raise ValueError(f"group_size: mode={mode!r} splits the two guidance passes over 2 ranks; a group of "
                         f"{group_size} rank(s) cannot be halved")
    cp = group_size // cfg
    kind = mode.split("+")[-1]
    if kind in ("ulysses", "ring"):
        if cp < 2:
            raise ValueError(f"group_size: mode={mode!r} needs at least {2 * cfg} ranks per group (context "
                             f"parallelism over >= 2 ranks{' per guidance pass' if cfg == 2 else ''}), got "
                             f"{group_size}")
        return (1, cfg, cp, 1) if kind == "ring" else (1, cfg, 1, cp)
    if mode == "cfg" and cp != 1:
        raise ValueError(f"group_size: mode='cfg' runs one guidance pass per rank, i.e. groups of 2 ranks, got "
                         f"{group_size}; use mode='cfg+ulysses' to split each pass over the other ranks, or "
                         f"group_size=2 for data parallelism over the remaining ranks")
    return (1, cfg, 1, 1) if mode == "cfg" else (group_size, 1, 1, 1)


def _transformer_and_text_encoder(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a WorldStereo model or a WorldStereoTransformer, got {type(model).__name__}")
    inner = model._modules.get("transformer")  # a sub-module (a diffusers config key is no attribute we want)
    transformer = inner if isinstance(inner, nn.Module) else model
    if not callable(getattr(transformer, "enable_parallelism", None)) or \
            not isinstance(transformer._modules.get("controlnet"), nn.Module):
        raise TypeError(f"model: expected a WorldStereo model or a WorldStereoTransformer, got {type(model).__name__}")
    text_encoder = model._modules.get("text_encoder") if transformer is not model else None
    return transformer, text_encoder


def enable_context_parallel(model: nn.Module, mode: str = "ulysses", *, group_size: int | None = None,
                            fsdp: bool = False, ulysses_anything: bool = False,
                            device: str | torch.device | None = None,
                            attention_backend: str | None = None) -> ParallelState:
    """Spread the generation of each video over several ranks (after ``torch.distributed`` is initialised).

    Places the model on this rank's device (or shards it with ``fsdp``), builds the
    ``("dp", "replicate", "cfg", "ring", "ulysses")`` device mesh and applies the context-parallel plan; see the
    module docstring for what each mode does. Call it on every rank with the same arguments, on
    models with identical weights, before generating. :func:`worldstereo.generate_video` then
    returns the same video on every rank of a group and writes ``save_path`` on its rank 0 only.

    Args:
        model: a :class:`~worldstereo.WorldStereo` (or a bare ``WorldStereoTransformer`` for the
            context-parallel modes) on the CPU or already on this rank's device, without a memory
            tier or CPU offload.
        mode: ``"ulysses"``, ``"ring"``, ``"cfg"``, ``"cfg+ulysses"``, ``"cfg+ring"`` or ``"none"``
            (nothing split: FSDP alone, or data parallelism for batches).
        group_size: ranks per video (default: the world size); the world size must be a multiple;
            the remaining factor is data parallelism (batches of jobs).
        fsdp: shard the transformer and text-encoder weights over the group (FSDP2).
        ulysses_anything: let Ulysses split token and head counts that do not divide by the degree
            (diffusers' uneven all-to-all).
        device: this rank's device (default: ``cuda:LOCAL_RANK`` under NCCL, else the CPU).
        attention_backend: diffusers attention backend to set first (default: unchanged, except for
            ring modes on CUDA where ``"_native_cudnn"`` is set when the default backend is in use).

    Returns:
        The :class:`ParallelState` (also stored on the model, see :func:`parallel_state`).

    Raises:
        ValueError: unknown mode, group size not fitting the mode or the world size, Ulysses degree
            not dividing the head counts.
        NotImplementedError: ring attention on the CPU (it needs an accelerator attention backend that
            returns the log-sum-exp); use ``"ulysses"``.
        UnavailableError (a ``RuntimeError`` and a ``ValueError``): no process group (use
            :func:`init_distributed` under ``torchrun``), parallelism already enabled, or a memory tier / CPU offload is applied (they place the model
            differently; use one or the other).
        TypeError: not a WorldStereo model; ``"cfg"`` modes on a bare transformer.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"mode: expected one of {list(PARALLEL_MODES)}, got {mode!r}")
    for name, flag in (("fsdp", fsdp), ("ulysses_anything", ulysses_anything)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    transformer, _ = _transformer_and_text_encoder(model)
    if mode.startswith("cfg") and transformer is model:
        raise TypeError(f"mode={mode!r}: CFG parallelism splits the sampling loop's guidance passes; pass the "
                        f"WorldStereo model, not its transformer")
    if device is not None:
        dev = check_device(device, "device")
    else:
        dev = _rank_device() if dist.is_available() and dist.is_initialized() else torch.device("cpu")
    if "ring" in mode and dev.type == "cpu":
        raise NotImplementedError(
            f"mode={mode!r}: ring attention needs an accelerator: it combines partial attentions with their "
            f"log-sum-exp, which the CPU attention (PyTorch SDPA, diffusers 'native') does not return; use "
            f"mode='ulysses' on the CPU, or run on CUDA GPUs")
    if not dist.is_available() or not dist.is_initialized():
        raise UnavailableError("enable_context_parallel: torch.distributed is not initialised; launch with torchrun and "
                           "call worldstereo.parallel.init_distributed() first")
    if parallel_state(model) is not None or getattr(transformer, "_parallel_config", None) is not None:
        raise UnavailableError("model: parallelism is already enabled; load the model again to change it")
    for attr, what in (("_worldstereo_memory_tier", "a memory tier"), ("_worldstereo_offload_handle", "CPU offload")):
        if getattr(model, attr, None) is not None:
            raise UnavailableError(f"model: {what} is applied; parallelism places the model itself (one full copy or an "
                               f"FSDP shard per rank) — load the model without it")

    world, rank = dist.get_world_size(), dist.get_rank()
    group = world if group_size is None else group_size
    if world % group:
        raise ValueError(f"group_size: {group} does not divide the world size {world}")
    replicate, cfg, ring, ulysses = _parse_mode(mode, group)
    if fsdp and group < 2:
        raise ValueError("fsdp: shards the weights over the ranks of a group; needs group_size >= 2")
    if mode == "none" and group > 1 and not fsdp:
        logger.warning("mode='none' with %d ranks per group and no FSDP: every rank of a group computes the same "
                       "video", group)
    if not ulysses_anything:  # before any collective work (or pass ulysses_anything=True)
        transformer.check_ulysses_degree(ulysses, name="group_size: the Ulysses degree")
    dp = world // group
    mesh = init_device_mesh(dev.type, (dp, replicate, cfg, ring, ulysses), mesh_dim_names=MESH_DIMS)
    if attention_backend is not None:
        transformer.set_attention_backend(attention_backend)
    elif ring > 1 and dev.type == "cuda" and getattr(transformer, "attention_backend", "sdpa") == "sdpa":
        transformer.set_attention_backend(RING_ATTENTION_BACKEND)
        logger.info("ring attention: attention backend %s", RING_ATTENTION_BACKEND)
    group_mesh = _group_mesh(mesh)
    if fsdp:
        shard_model(model, group_mesh)
        for name in ("image_encoder", "vae"):
            part = model._modules.get(name) if transformer is not model else None
            if isinstance(part, nn.Module):
                part.to(dev)
    else:
        model.to(dev)
    if ring * ulysses > 1:
        from diffusers import ContextParallelConfig  # heavy: only when context parallelism is used

        transformer.enable_parallelism(config=ContextParallelConfig(
            ring_degree=ring, ulysses_degree=ulysses, mesh=mesh, ulysses_anything=ulysses_anything))
    cfg_parallel = CFGParallel(mesh["cfg"].get_group(), mesh["cfg"].get_local_rank()) if cfg > 1 else None
    state = ParallelState(
        mode=mode, rank=rank, world_size=world, group_size=group, group_rank=group_mesh.get_local_rank(),
        data_parallel_size=dp, data_parallel_rank=mesh["dp"].get_local_rank(), replicate_degree=replicate,
        cfg_degree=cfg, ring_degree=ring,
        ulysses_degree=ulysses, fsdp=fsdp, device=dev, mesh=mesh, group_mesh=group_mesh,
        cfg_parallel=cfg_parallel,
    )
    object.__setattr__(model, _STATE_ATTR, state)
    logger.info("parallel: %s, %d group(s) of %d rank(s) (cfg %d x ring %d x ulysses %d)%s", mode, dp, group, cfg,
                ring, ulysses, ", FSDP" if fsdp else "")
    return state


def _shard_blocks(module: nn.Module, class_names: set[str], mesh: Any) -> int:
    from torch.distributed.fsdp import fully_shard  # FSDP2: imported only when sharding

    n = 0
    for sub in list(module.modules()):
        if sub is not module and type(sub).__name__ in class_names:
            fully_shard(sub, mesh=mesh, reshard_after_forward=True)
            n += 1
    fully_shard(module, mesh=mesh, reshard_after_forward=True)
    return n


def shard_model(model: nn.Module, mesh: Any) -> None:
    """FSDP2-shard the transformer and the text encoder of ``model`` over ``mesh`` (inference).

    Each module whose class is in the component's ``_no_split_modules`` (backbone blocks,
    ControlNet blocks; the T5 blocks of the text encoder) becomes its own FSDP unit, then the
    component root (embeddings, heads). Parameters keep their dtypes (no mixed-precision policy) and
    stop requiring gradients. The shards go to the mesh's device. Usually called through
    :func:`enable_context_parallel` (``fsdp=True``), which also moves the unsharded components.

    Args:
        model: a WorldStereo model or a bare transformer.
        mesh: a 1-D device mesh (the group).
    """
    if mesh is None or not callable(getattr(mesh, "size", None)):
        raise TypeError(f"mesh: expected a 1-D torch.distributed DeviceMesh, got {type(mesh).__name__}")
    transformer, text_encoder = _transformer_and_text_encoder(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for part in (transformer, text_encoder):
        if part is None:
            continue
        names = set(getattr(part, "_no_split_modules", None) or [])
        n = _shard_blocks(part, names, mesh)
        logger.info("FSDP: %s sharded over %d ranks (%d blocks)", type(part).__name__, mesh.size(), n)


# ---------------------------------------------------------------------------------------- decode
def decode_split(decode: Callable[[Tensor], Tensor], latents: Tensor, state: ParallelState) -> Tensor:
    """Decode keyframe latents ``(B, C, F, h, w)`` with the frames split over the group's ranks.

    ``decode`` maps ``(B, C, n, h, w)`` latents to ``(B, 3, n, H, W)`` frames, each frame on its own
    (the keyframe VAE), so splitting is exact. Rank ``r`` decodes frames
    ``[r·k, (r+1)·k)`` with ``k = ceil(F / group_size)`` (padded with frame 0 to equal size), then
    the group ``all_gather``s. Returns what ``decode(latents)`` returns, on every rank.
    """
    if not isinstance(state, ParallelState):
        raise TypeError(f"state: expected the ParallelState of enable_context_parallel, got {type(state).__name__}")
    if not callable(decode):
        raise TypeError(f"decode: expected a callable, got {type(decode).__name__}")
    if not isinstance(latents, Tensor) or latents.ndim != 5:
        raise ValueError(f"latents: expected a (B, C, F, h, w) tensor, got {getattr(latents, 'shape', type(latents))}")
    group = state.group_process_group
    n_frames = latents.shape[2]
    if group is None or n_frames < 2:
        return decode(latents)
    g = state.group_size
    k = math.ceil(n_frames / g)
    index = [min(i, n_frames - 1) if i < n_frames else 0 for i in range(state.group_rank * k, (state.group_rank + 1) * k)]
    local = decode(latents[:, :, index]).contiguous()
    parts = [torch.empty_like(local) for _ in range(g)]
    dist.all_gather(parts, local, group=group)  # "cpu:gloo,cuda:nccl" picks the backend by device
    return torch.cat(parts, dim=2)[:, :, :n_frames]
