"""Attention kernels and processors of the WorldStereo transformer.

Tensor layout inside this module: ``[B, S, H, Dh]`` (batch, sequence, heads, head dim).
Backends: ``"sdpa"`` (PyTorch ``scaled_dot_product_attention``, default) and ``"xformers"``
(``xformers.ops.memory_efficient_attention``; an ImportError with an install hint is raised when it is
requested but not installed). Both use the standard ``Dh**-0.5`` scale and no mask.

RoPE: interleaved-pair rotation as diffusers' Wan (``out[2i] = x[2i]·cos − x[2i+1]·sin``,
``out[2i+1] = x[2i]·sin + x[2i+1]·cos``) with tables ``[1, S, 1, Dh]`` whose pairs repeat each
frequency. The reference rotates with float64 tables; we rotate in float32 (differences ~1e-6).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ATTENTION_BACKENDS",
    "check_attention_backend",
    "attention",
    "apply_rotary_emb",
    "rms_norm",
    "AttentionProcessorBase",
    "WanSelfAttnProcessor",
    "WanCrossAttnProcessor",
    "ControlNetAttnProcessor",
]

ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "xformers")


def check_attention_backend(backend: str) -> str:
    """Validate ``backend`` (``"sdpa"`` or ``"xformers"``) and return it.

    Raises:
        ValueError: unknown backend name.
        ImportError: ``"xformers"`` requested but the package is not installed.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend: expected one of {list(ATTENTION_BACKENDS)}, got {backend!r}")
    if backend == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ImportError("backend='xformers' requested but xformers is not installed "
                          "(pip install xformers), use backend='sdpa' instead")
    return backend


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
    """Dense attention without mask.

    Args:
        q: ``[B, Sq, H, Dh]``; k, v: ``[B, Sk, H, Dh]`` (same dtype).
        backend: ``"sdpa"`` or ``"xformers"``.
    Returns:
        ``[B, Sq, H, Dh]`` in the dtype of ``q``.
    """
    if backend == "xformers":
        import xformers.ops  # noqa: PLC0415  (optional dependency)

        return xformers.ops.memory_efficient_attention(q.contiguous(), k.contiguous(), v.contiguous())
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


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
    """Apply an RMSNorm module (torch.nn.RMSNorm or diffusers RMSNorm) in float32."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = 1e-6
    return rms_norm(x, weight, float(eps))


class AttentionProcessorBase:
    """Common state of our processors: the attention backend (``"sdpa"`` | ``"xformers"``)."""

    def __init__(self, backend: str = "sdpa") -> None:
        self.backend = check_attention_backend(backend)

    def set_backend(self, backend: str) -> None:
        self.backend = check_attention_backend(backend)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r})"


class WanSelfAttnProcessor(AttentionProcessorBase):
    """Backbone self-attention (``attn1`` of a Wan block), optionally joint with a reference stream.

    With ``ref`` given (SSM block of the memory model) the same projections are applied to both
    streams, RoPE uses ``rotary_emb`` for targets and ``ref_rotary_emb`` for references, and one dense
    attention runs over ``[reference tokens ; target tokens]``; ``to_out`` is applied to each part.
    """

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, rotary_emb: tuple[Tensor, Tensor],
                 ref: Tensor | None = None, ref_rotary_emb: tuple[Tensor, Tensor] | None = None
                 ) -> tuple[Tensor, Tensor | None]:
        """Args: hidden_states ``[B, L, D]``; ref ``[B, Lr, D]``; rope tables ``[1, L(r), 1, Dh]``.
        Returns (target output ``[B, L, D]``, reference output ``[B, Lr, D]`` or None)."""
        heads = attn.heads
        n_ref = 0
        x = hidden_states
        if ref is not None:
            n_ref = ref.shape[1]
            x = torch.cat([ref, hidden_states], dim=1)
        q = _norm(attn.norm_q, attn.to_q(x)).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, attn.to_k(x)).unflatten(2, (heads, -1))
        v = attn.to_v(x).unflatten(2, (heads, -1))
        if ref is not None:
            assert ref_rotary_emb is not None
            cos = torch.cat([ref_rotary_emb[0], rotary_emb[0]], dim=1)
            sin = torch.cat([ref_rotary_emb[1], rotary_emb[1]], dim=1)
        else:
            cos, sin = rotary_emb
        q = apply_rotary_emb(q, cos, sin)
        k = apply_rotary_emb(k, cos, sin)
        out = attention(q, k, v, self.backend).flatten(2, 3).type_as(q)
        out = attn.to_out[0](out)
        if ref is None:
            return out, None
        return out[:, n_ref:], out[:, :n_ref]


class WanCrossAttnProcessor(AttentionProcessorBase):
    """Backbone cross-attention (``attn2``): text (last 512 context tokens) + I2V image branch
    (``add_k_proj``/``add_v_proj``/``norm_added_k`` on the leading image tokens); outputs summed."""

    TEXT_LEN = 512

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, context: Tensor) -> Tensor:
        """hidden_states ``[B, L, D]``; context ``[B, Ni + 512, D]`` → ``[B, L, D]``."""
        heads = attn.heads
        img = None
        if getattr(attn, "add_k_proj", None) is not None:
            n_img = context.shape[1] - self.TEXT_LEN
            img = context[:, :n_img]
            context = context[:, n_img:]
        q = _norm(attn.norm_q, attn.to_q(hidden_states)).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, attn.to_k(context)).unflatten(2, (heads, -1))
        v = attn.to_v(context).unflatten(2, (heads, -1))
        out = attention(q, k, v, self.backend).flatten(2, 3).type_as(q)
        if img is not None and img.shape[1] > 0:
            k_img = _norm(attn.norm_added_k, attn.add_k_proj(img)).unflatten(2, (heads, -1))
            v_img = attn.add_v_proj(img).unflatten(2, (heads, -1))
            out = out + attention(q, k_img, v_img, self.backend).flatten(2, 3).type_as(q)
        return attn.to_out[0](out)


class ControlNetAttnProcessor(AttentionProcessorBase):
    """ControlNet self-attention: q/k RMS-normed over the full width, ControlNet RoPE, dense SDPA."""

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, rotary_emb: tuple[Tensor, Tensor]) -> Tensor:
        """hidden_states ``[B, L, d]``; rope tables ``[1, L, 1, d/heads]`` → ``[B, L, d]``."""
        heads = attn.heads
        q = _norm(attn.norm_q, attn.to_q(hidden_states)).unflatten(2, (heads, -1))
        k = _norm(attn.norm_k, attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (heads, -1))
        q = apply_rotary_emb(q, *rotary_emb)
        k = apply_rotary_emb(k, *rotary_emb)
        out = attention(q, k, v, self.backend).flatten(2, 3).type_as(q)
        return attn.to_out[0](out)
