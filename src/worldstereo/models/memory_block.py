"""Wan backbone blocks: camera block and SSM (spatial-stereo memory) block with joint attention.

:class:`WorldStereoBlock` has exactly the parameters of diffusers' ``WanTransformerBlock`` (it
subclasses it; ``attn1``/``attn2`` are diffusers ``WanAttention`` modules with our processors), so base
Wan weights and the reference checkpoints load into it. Its forward runs the standard Wan block on the
target tokens and, when a reference stream is given (memory models, reference
``WanTransformerSparseSpatialBlock``; :class:`WorldStereoMemoryBlock`):

* modulation ``(shift, scale, gate, c_shift, c_scale, c_gate) = scale_shift_table + temb`` (fp32),
  shared by targets and references;
* one dense self-attention over ``[reference tokens ; target tokens]`` (target RoPE for targets,
  stitched reference RoPE for references), gated residual on both streams;
* cross-attention on the targets only;
* the FFN with the same weights and modulation on both streams.

The GGM ControlNet residual of the block (if any) is added to the block's target output inside the
block (``controlnet_residual``), so that block-level hooks (diffusers' FirstBlockCache, MagCache, ...)
see the block output the next block receives.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor

from .attention import AttentionProcessorBase, WanCrossAttnProcessor, WanSelfAttnProcessor

__all__ = ["WorldStereoBlock", "WorldStereoMemoryBlock", "register_block_metadata"]


class WorldStereoBlock(WanTransformerBlock):
    """Wan transformer block (diffusers parameter names) with an optional reference stream.

    Returns the target tokens, or ``(targets, references)`` when ``ref_states`` is given.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: str = "rms_norm_across_heads",
                 cross_attn_norm: bool = False, eps: float = 1e-6, added_kv_proj_dim: int | None = None) -> None:
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.attn1.set_processor(WanSelfAttnProcessor())
        self.attn2.set_processor(WanCrossAttnProcessor())

    def attention_processors(self) -> list[AttentionProcessorBase]:
        return [self.attn1.processor, self.attn2.processor]

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
        controlnet_residual: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the block.

        Args:
            hidden_states: target tokens ``[B, L, D]``.
            encoder_hidden_states: context ``[B, Ni + 512, D]`` (image tokens then text tokens).
            temb: timestep projection ``[B, 6, D]``.
            rotary_emb: target RoPE ``(cos, sin)``, each ``[1, L, 1, Dh]``.
            ref_states: reference tokens ``[B, Lr, D]`` or None (camera model).
            ref_rotary_emb: reference RoPE, each ``[1, Lr, 1, Dh]`` (required with ``ref_states``).
            controlnet_residual: ``[B, L, D]`` GGM residual added to the target output (cast to its dtype).
        Returns:
            target tokens ``[B, L, D]``; with ``ref_states`` a tuple (targets, references ``[B, Lr, D]``).
        """
        if temb.ndim != 3:
            raise ValueError(f"temb: expected [B, 6, D] (per-sample timesteps), got shape {tuple(temb.shape)}")
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + temb.float()).chunk(6, dim=1)

        # 1. self-attention (joint with the references when given)
        norm_x = self._modulate(self.norm1, hidden_states, scale, shift)
        if ref_states is None:
            attn_x = self.attn1(norm_x, rotary_emb=rotary_emb)
            attn_r = None
        else:
            norm_r = self._modulate(self.norm1, ref_states, scale, shift)
            attn_x, attn_r = self.attn1(norm_x, rotary_emb=rotary_emb, ref=norm_r, ref_rotary_emb=ref_rotary_emb)
        hidden_states = (hidden_states.float() + attn_x * gate).type_as(hidden_states)
        if ref_states is not None:
            ref_states = (ref_states.float() + attn_r * gate).type_as(ref_states)

        # 2. cross-attention (targets only)
        norm_x = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm_x, encoder_hidden_states)

        # 3. feed-forward (same weights and modulation for both streams)
        norm_x = self._modulate(self.norm3, hidden_states, c_scale, c_shift)
        hidden_states = (hidden_states.float() + self.ffn(norm_x).float() * c_gate).type_as(hidden_states)
        if controlnet_residual is not None:
            hidden_states = hidden_states + controlnet_residual.to(hidden_states.dtype)
        if ref_states is None:
            return hidden_states
        norm_r = self._modulate(self.norm3, ref_states, c_scale, c_shift)
        ref_states = (ref_states.float() + self.ffn(norm_r).float() * c_gate).type_as(ref_states)
        return hidden_states, ref_states


class WorldStereoMemoryBlock(WorldStereoBlock):
    """The SSM block of the memory variants (same parameters and forward as :class:`WorldStereoBlock`,
    always called with ``ref_states``, so it returns ``(targets, references)``). A class of its own so
    that diffusers' block hooks know its output layout."""


_REGISTERED = False


def register_block_metadata() -> None:
    """Tell diffusers' block-level hooks (FirstBlockCache, MagCache, layer skip, ...) where our blocks
    return their streams: targets at output 0; memory blocks also return the reference stream at 1."""
    global _REGISTERED
    if _REGISTERED:
        return
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry  # noqa: PLC0415

    TransformerBlockRegistry.register(WorldStereoBlock, TransformerBlockMetadata(
        return_hidden_states_index=0, return_encoder_hidden_states_index=None))
    TransformerBlockRegistry.register(WorldStereoMemoryBlock, TransformerBlockMetadata(
        return_hidden_states_index=0, return_encoder_hidden_states_index=1,
        encoder_hidden_states_argument_name="ref_states"))
    _REGISTERED = True
