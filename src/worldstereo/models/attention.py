"""Attention processors of the WorldStereo transformer, on diffusers' attention dispatcher.

Every attention of the model (backbone self/joint attention, backbone cross-attention, ControlNet
self-attention) is a diffusers ``AttentionModuleMixin`` module whose processor calls
``diffusers.models.attention_dispatch.dispatch_attention_fn``. So diffusers' own machinery applies
unchanged: ``ModelMixin.set_attention_backend(name)`` sets ``processor._attention_backend`` (any
diffusers backend name: ``"native"``, ``"xformers"``, ``"flash"``, ...), and
``ModelMixin.enable_parallelism`` sets ``processor._parallel_config`` so that self-attentions run
Ulysses/ring context parallel attention over the sequence-sharded tokens (cross-attentions stay local:
their keys, the text/image context, are not sharded).

Tensor layout inside this module: ``[B, S, H, Dh]`` (batch, sequence, heads, head dim), the layout of
``dispatch_attention_fn``. Attention is dense with the standard ``Dh**-0.5`` scale and no mask.

Legacy backend names: ``"sdpa"`` is diffusers' ``"native"`` (PyTorch
``scaled_dot_product_attention``); ``"xformers"`` is the same in both.

RoPE: interleaved-pair rotation as diffusers' Wan (``out[2i] = x[2i]·cos − x[2i+1]·sin``,
``out[2i+1] = x[2i]·sin + x[2i+1]·cos``) with tables ``[1, S, 1, Dh]`` whose pairs repeat each
frequency. The reference rotates with float64 tables; we rotate in float32 (differences ~1e-6).
q/k RMS norms are computed in float32 and cast back (the reference's numerics).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
from torch import Tensor

__all__ = [
    "ATTENTION_BACKENDS",
    "check_attention_backend",
    "diffusers_backend_name",
    "legacy_backend_name",
    "attention",
    "apply_rotary_emb",
    "rms_norm",
    "AttentionProcessorBase",
    "WanSelfAttnProcessor",
    "WanCrossAttnProcessor",
    "ControlNetAttnProcessor",
]

#: Legacy backend names accepted by :meth:`WorldStereoTransformer.set_attention_backend` besides every
#: diffusers ``AttentionBackendName`` value.
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "xformers")
_LEGACY_TO_DIFFUSERS = {"sdpa": "native"}


def diffusers_backend_name(backend: str) -> str:
    """Map a backend name (legacy ``"sdpa"`` or any diffusers ``AttentionBackendName`` value) to the
    diffusers name.

    Raises:
        ValueError: unknown backend name.
    """
    if not isinstance(backend, str):
        raise ValueError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    name = _LEGACY_TO_DIFFUSERS.get(backend.lower(), backend.lower())
    known = {b.value for b in AttentionBackendName}
    if name not in known:
        raise ValueError(f"backend: expected 'sdpa' or one of diffusers' attention backends {sorted(known)}, "
                         f"got {backend!r}")
    return name


def legacy_backend_name(backend: Any) -> str:
    """The name we report for a processor backend: ``None`` / ``"native"`` -> ``"sdpa"``, else the diffusers name."""
    if backend is None:
        return "sdpa"
    value = backend.value if isinstance(backend, AttentionBackendName) else str(backend)
    return "sdpa" if value == "native" else value


def check_attention_backend(backend: str) -> str:
    """Validate ``backend`` and return its diffusers name (``"sdpa"`` -> ``"native"``).

    Raises:
        ValueError: unknown backend name.
        ImportError: ``"xformers"`` requested but the package is not installed.
    """
    name = diffusers_backend_name(backend)
    if name == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ImportError("backend='xformers' requested but xformers is not installed "
                          "(pip install xformers), use backend='sdpa' instead")
    return name


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str | None = None, parallel_config: Any = None) -> Tensor:
    """Dense attention without mask through diffusers' dispatcher.

    Args:
        q: ``[B, Sq, H, Dh]``; k, v: ``[B, Sk, H, Dh]`` (same dtype).
        backend: a backend name (``"sdpa"``, ``"native"``, ``"xformers"``, ...) or None for diffusers'
            active default (``"native"`` unless changed).
        parallel_config: diffusers ``ParallelConfig`` for context-parallel self-attention, else None.
    Returns:
        ``[B, Sq, H, Dh]`` in the dtype of ``q``.
    """
    name = None if backend is None else diffusers_backend_name(backend)
    return dispatch_attention_fn(q, k, v, backend=name, parallel_config=parallel_config)


def apply_rotary_emb(x: Tensor, freqs_cos: Tensor, freqs_sin: Tensor) -> Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, S, H, Dh]`` with tables ``[1 or B, S, 1, Dh]``.

    Computed in float32 (or float64 if ``x`` is float64) and cast back to ``x.dtype``.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(work)
    x1, x2 = xf.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2].to(work)
    sin = freqs_sin[..., 1::2].to(work)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """RMS norm over the last dim, computed in float32, scaled by ``weight`` (cast to x's dtype)."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def _norm(module: Any, x: Tensor) -> Tensor:
    """Apply an RMSNorm module (torch.nn.RMSNorm, diffusers RMSNorm or our weight holder) in float32."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = 1e-6
    return rms_norm(x, weight, float(eps))


def _self_qkv(attn: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v projections of a self-attention (fused ``to_qkv`` after ``fuse_projections()``)."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
        q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
        return q, k, v
    return attn.to_q(x), attn.to_k(x), attn.to_v(x)


class AttentionProcessorBase:
    """diffusers' processor protocol.

    Attributes:
        _attention_backend: diffusers backend (``AttentionBackendName`` or None = the active default);
            set by ``ModelMixin.set_attention_backend``.
        _parallel_config: diffusers ``ParallelConfig`` set by ``ModelMixin.enable_parallelism``
            (context parallel self-attention); None otherwise.
    """

    _attention_backend: Any = None
    _parallel_config: Any = None

    def __init__(self, backend: str | None = None) -> None:
        if backend is not None:
            self.set_backend(backend)

    @property
    def backend(self) -> str:
        """Backend name in use (``"sdpa"`` for diffusers' ``"native"``/default)."""
        return legacy_backend_name(self._attention_backend)

    def set_backend(self, backend: str) -> None:
        """Select the backend of this processor (``"sdpa"`` or any diffusers backend name)."""
        self._attention_backend = AttentionBackendName(check_attention_backend(backend))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r})"


class WanSelfAttnProcessor(AttentionProcessorBase):
    """Backbone self-attention (``attn1`` of a Wan block), optionally joint with a reference stream.

    With ``ref`` given (SSM block of the memory model) the same projections are applied to both
    streams, RoPE uses ``rotary_emb`` for targets and ``ref_rotary_emb`` for references, and one dense
    attention runs over ``[reference tokens ; target tokens]``; ``to_out`` is applied to each part.
    Under context parallelism each rank holds a slice of both streams; attention is permutation
    invariant over keys, so the Ulysses all-to-all over the concatenated local slices is exact.
    """

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None,
                 ref: Tensor | None = None, ref_rotary_emb: tuple[Tensor, Tensor] | None = None
                 ) -> Tensor | tuple[Tensor, Tensor]:
        """Args: hidden_states ``[B, L, D]``; ref ``[B, Lr, D]``; rope tables ``[1, L(r), 1, Dh]``.
        Returns the target output ``[B, L, D]``, or with ``ref`` a tuple (targets, references ``[B, Lr, D]``)."""
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("WanSelfAttnProcessor: self-attention takes no encoder_hidden_states / attention_mask")
        if rotary_emb is None:
            raise ValueError("rotary_emb: required by the backbone self-attention")
        heads = attn.heads
        n_ref = 0
        x = hidden_states
        if ref is not None:
            n_ref = ref.shape[1]
            x = torch.cat([ref, hidden_states], dim=1)
        q, k, v = _self_qkv(attn, x)
        q = _norm(attn.norm_q, q).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, k).unflatten(2, (heads, -1))
        v = v.unflatten(2, (heads, -1))
        if ref is not None:
            if ref_rotary_emb is None:
                raise ValueError("ref_rotary_emb: required with a reference stream")
            cos = torch.cat([ref_rotary_emb[0], rotary_emb[0]], dim=1)
            sin = torch.cat([ref_rotary_emb[1], rotary_emb[1]], dim=1)
        else:
            cos, sin = rotary_emb
        q = apply_rotary_emb(q, cos, sin)
        k = apply_rotary_emb(k, cos, sin)
        out = dispatch_attention_fn(q, k, v, backend=self._attention_backend, parallel_config=self._parallel_config)
        out = attn.to_out[0](out.flatten(2, 3).type_as(q))
        if ref is None:
            return out
        return out[:, n_ref:], out[:, :n_ref]


class WanCrossAttnProcessor(AttentionProcessorBase):
    """Backbone cross-attention (``attn2``): text (last 512 context tokens) + I2V image branch
    (``add_k_proj``/``add_v_proj``/``norm_added_k`` on the leading image tokens); outputs summed.
    Never context parallel (the context is not sharded; the queries are independent)."""

    TEXT_LEN = 512

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, rotary_emb: Any = None) -> Tensor:
        """hidden_states ``[B, L, D]``; encoder_hidden_states ``[B, Ni + 512, D]`` → ``[B, L, D]``."""
        if encoder_hidden_states is None:
            raise ValueError("encoder_hidden_states: required by the cross-attention")
        if attention_mask is not None:
            raise ValueError("attention_mask: not supported by the WorldStereo cross-attention")
        heads = attn.heads
        context = encoder_hidden_states
        img = None
        if getattr(attn, "add_k_proj", None) is not None:
            n_img = context.shape[1] - self.TEXT_LEN
            img = context[:, :n_img]
            context = context[:, n_img:]
        fused = getattr(attn, "fused_projections", False)
        q = attn.to_q(hidden_states)
        if fused and hasattr(attn, "to_kv"):
            k, v = attn.to_kv(context).chunk(2, dim=-1)
        else:
            k, v = attn.to_k(context), attn.to_v(context)
        q = _norm(attn.norm_q, q).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, k).unflatten(2, (heads, -1))
        v = v.unflatten(2, (heads, -1))
        out = dispatch_attention_fn(q, k, v, backend=self._attention_backend, parallel_config=None)
        out = out.flatten(2, 3).type_as(q)
        if img is not None and img.shape[1] > 0:
            if fused and hasattr(attn, "to_added_kv"):
                k_img, v_img = attn.to_added_kv(img).chunk(2, dim=-1)
            else:
                k_img, v_img = attn.add_k_proj(img), attn.add_v_proj(img)
            k_img = _norm(attn.norm_added_k, k_img).unflatten(2, (heads, -1))
            v_img = v_img.unflatten(2, (heads, -1))
            out_img = dispatch_attention_fn(q, k_img, v_img, backend=self._attention_backend, parallel_config=None)
            out = out + out_img.flatten(2, 3).type_as(q)
        return attn.to_out[0](out)


class ControlNetAttnProcessor(AttentionProcessorBase):
    """ControlNet self-attention: q/k RMS-normed over the full width, ControlNet RoPE, dense attention
    (context parallel like the backbone self-attention when enabled)."""

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """hidden_states ``[B, L, d]``; rope tables ``[1, L, 1, d/heads]`` → ``[B, L, d]``."""
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("ControlNetAttnProcessor: self-attention takes no encoder_hidden_states / attention_mask")
        if rotary_emb is None:
            raise ValueError("rotary_emb: required by the ControlNet self-attention")
        heads = attn.heads
        q, k, v = _self_qkv(attn, hidden_states)
        q = _norm(attn.norm_q, q).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, k).unflatten(2, (heads, -1))
        v = v.unflatten(2, (heads, -1))
        q = apply_rotary_emb(q, *rotary_emb)
        k = apply_rotary_emb(k, *rotary_emb)
        out = dispatch_attention_fn(q, k, v, backend=self._attention_backend, parallel_config=self._parallel_config)
        return attn.to_out[0](out.flatten(2, 3).type_as(q))
