"""Wan backbone block with the SSM (spatial-stereo memory) joint attention.

:class:`WorldStereoBlock` has exactly the parameters of diffusers' ``WanTransformerBlock`` (it
subclasses it), so base Wan weights and the reference checkpoints load into it. Its forward runs the
standard Wan block on the target tokens and, when a reference stream is given (memory models,
reference ``WanTransformerSparseSpatialBlock``):

* modulation ``(shift, scale, gate, c_shift, c_scale, c_gate) = scale_shift_table + temb`` (fp32),
  shared by targets and references;
* one dense self-attention over ``[reference tokens ; target tokens]`` (target RoPE for targets,
  stitched reference RoPE for references), gated residual on both streams;
* cross-attention on the targets only;
* the FFN with the same weights and modulation on both streams.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor

from .attention import AttentionProcessorBase, WanCrossAttnProcessor, WanSelfAttnProcessor

__all__ = ["WorldStereoBlock"]


class WorldStereoBlock(WanTransformerBlock):
    """Wan transformer block (diffusers parameter names) with an optional reference stream."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: str = "rms_norm_across_heads",
                 cross_attn_norm: bool = False, eps: float = 1e-6, added_kv_proj_dim: int | None = None) -> None:
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.self_attn_processor = WanSelfAttnProcessor()
        self.cross_attn_processor = WanCrossAttnProcessor()

    def attention_processors(self) -> list[AttentionProcessorBase]:
        return [self.self_attn_processor, self.cross_attn_processor]

    def _modulate(self, norm: torch.nn.Module, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        return (norm(x.float()) * (1 + scale) + shift).type_as(x)

    def forward(  # type: ignore[override]
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        temb: Tensor,
        rotary_emb: tuple[Tensor, Tensor],
        ref_states: Tensor | None = None,
        ref_rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the block.

        Args:
            hidden_states: target tokens ``[B, L, D]``.
            encoder_hidden_states: context ``[B, Ni + 512, D]`` (image tokens then text tokens).
            temb: timestep projection ``[B, 6, D]``.
            rotary_emb: target RoPE ``(cos, sin)``, each ``[1, L, 1, Dh]``.
            ref_states: reference tokens ``[B, Lr, D]`` or None (camera model).
            ref_rotary_emb: reference RoPE, each ``[1, Lr, 1, Dh]`` (required with ``ref_states``).
        Returns:
            target tokens ``[B, L, D]``; with ``ref_states`` a tuple (targets, references ``[B, Lr, D]``).
        """
        if temb.ndim != 3:
            raise ValueError(f"temb: expected [B, 6, D] (per-sample timesteps), got shape {tuple(temb.shape)}")
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + temb.float()).chunk(6, dim=1)

        # 1. self-attention (joint with the references when given)
        norm_x = self._modulate(self.norm1, hidden_states, scale, shift)
        norm_r = self._modulate(self.norm1, ref_states, scale, shift) if ref_states is not None else None
        attn_x, attn_r = self.self_attn_processor(self.attn1, norm_x, rotary_emb, norm_r, ref_rotary_emb)
        hidden_states = (hidden_states.float() + attn_x * gate).type_as(hidden_states)
        if ref_states is not None:
            ref_states = (ref_states.float() + attn_r * gate).type_as(ref_states)

        # 2. cross-attention (targets only)
        norm_x = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.cross_attn_processor(self.attn2, norm_x, encoder_hidden_states)

        # 3. feed-forward (same weights and modulation for both streams)
        norm_x = self._modulate(self.norm3, hidden_states, c_scale, c_shift)
        hidden_states = (hidden_states.float() + self.ffn(norm_x).float() * c_gate).type_as(hidden_states)
        if ref_states is None:
            return hidden_states
        norm_r = self._modulate(self.norm3, ref_states, c_scale, c_shift)
        ref_states = (ref_states.float() + self.ffn(norm_r).float() * c_gate).type_as(ref_states)
        return hidden_states, ref_states
