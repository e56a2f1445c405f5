"""GGM ControlNet branch (reference ``WanXControlNet`` + ``MaskCamEmbed``), state-dict compatible.

:class:`WanXControlNet` is a diffusers ``ModelMixin`` + ``ConfigMixin`` (its registered config is the
structural part of the reference ``controlnet_cfg`` plus ``in_channels``, ``out_dim`` and
``patch_size``), so it can be saved, loaded, group-offloaded, layerwise-cast or compiled on its own,
and it is a component of its own for model CPU offload. Its self-attention is a diffusers
``AttentionModuleMixin`` dispatching through ``dispatch_attention_fn`` (backends and context parallel).

Key layout under ``controlnet.``: ``proj_in`` (absent when conv_out_dim == dim),
``controlnet_blocks.{i}`` (``norm1.linear``, ``norm1.norm``, ``self_attn.{norm_q,norm_k,to_q,to_k,to_v,
to_out.0}``, ``norm2.*``, ``ffn.{0,2}``), ``proj_out.{i}`` (dim → backbone width D),
``controlnet_patch_embedding``, ``controlnet_mask_embedding.{mask_proj.0, mask_proj.1, mask_zero_proj}``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from .attention import ControlNetAttnProcessor
from .config import ControlNetConfig
from .diffusers_checkpoint import CheckpointFolderMixin

__all__ = ["MaskCamEmbed", "LayerNormZero", "ControlNetSelfAttention", "ControlNetBlock", "WanXControlNet"]


class MaskCamEmbed(nn.Module):
    """Embeds the hole mask + Plücker map at full pixel resolution into backbone tokens.

    ``mask_proj`` = Conv3d(add_channels → mid, k = s = (md, 8, 8)) → GroupNorm(mid/8, mid) → SiLU;
    ``mask_zero_proj`` = Conv3d(mid → out_dim, k = s = (1, 2, 2)); flattened ``b c f h w → b (f h w) c``.
    With ``mask_downsample`` md > 1 the input is zero-padded in time by md−1 frames in front (and at the
    back too when ``interp``), as the reference's 81-frame setting.
    """

    def __init__(self, add_channels: int, mid_channels: int, out_dim: int, mask_downsample: int = 1,
                 interp: bool = False) -> None:
        super().__init__()
        self.mask_downsample = mask_downsample
        self.interp = interp
        self.mask_proj = nn.Sequential(
            nn.Conv3d(add_channels, mid_channels, kernel_size=(mask_downsample, 8, 8), stride=(mask_downsample, 8, 8)),
            nn.GroupNorm(mid_channels // 8, mid_channels),
            nn.SiLU(),
        )
        self.mask_zero_proj = nn.Conv3d(mid_channels, out_dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        """x ``[B, add_channels, F_pix, H, W]`` (H, W multiples of 16) → tokens ``[B, F'·H/16·W/16, out_dim]``."""
        if self.mask_downsample > 1:
            pad = self.mask_downsample - 1
            x = F.pad(x, (0, 0, 0, 0, pad, pad if self.interp else 0))
        x = self.mask_proj(x)
        x = self.mask_zero_proj(x)
        return x.flatten(2).transpose(1, 2)


class LayerNormZero(nn.Module):
    """AdaLN-zero modulation: ``(shift, scale, gate) = linear(SiLU(c)).chunk(3)``;
    returns ``(norm(x)·(1+scale)+shift, gate)`` with LayerNorm(dim, eps=1e-5, affine)."""

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 3 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=True)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x ``[B, L, dim]``, cond ``[B, cond_dim]`` → (``[B, L, dim]``, gate ``[B, 1, dim]``)."""
        shift, scale, gate = self.linear(F.silu(cond)).unsqueeze(1).chunk(3, dim=-1)
        return self.norm(x) * (1 + scale) + shift, gate


class _RMSWeight(nn.Module):
    """RMSNorm parameter holder (``weight``) used by the attention processor (eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))


class ControlNetSelfAttention(nn.Module, AttentionModuleMixin):
    """Self-attention of a ControlNet block (parameter names of diffusers ``Attention``); a diffusers
    ``AttentionModuleMixin`` so that ``set_attention_backend`` and ``enable_parallelism`` reach it."""

    _default_processor_cls = ControlNetAttnProcessor
    _available_processors = [ControlNetAttnProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.is_cross_attention = False
        self.norm_q = _RMSWeight(dim, eps)
        self.norm_k = _RMSWeight(dim, eps)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.set_processor(ControlNetAttnProcessor())

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return self.processor(self, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


class ControlNetBlock(nn.Module):
    """Reference ``SingleAttentionBlock``: ``x += g1·attn(mod1(x)); x += g2·ffn(mod2(x))``."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, time_embed_dim: int) -> None:
        super().__init__()
        self.norm1 = LayerNormZero(time_embed_dim, dim)
        self.self_attn = ControlNetSelfAttention(dim, num_heads)
        self.norm2 = LayerNormZero(time_embed_dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, x: Tensor, temb: Tensor, rotary_emb: tuple[Tensor, Tensor]) -> Tensor:
        h, gate = self.norm1(x, temb)
        x = x + gate * self.self_attn(h, rotary_emb=rotary_emb)
        h, gate = self.norm2(x, temb)
        return x + gate * self.ffn(h)


class WanXControlNet(CheckpointFolderMixin, ModelMixin, ConfigMixin, AttentionMixin):
    """GGM ControlNet: embeds ``cat([hidden_states[:, :20], render_latent])`` and the mask/camera map,
    runs ``num_layers`` blocks and emits one D-wide residual per block.

    The constructor arguments are the structural keys of the reference ``controlnet_cfg``
    (:class:`~worldstereo.models.config.ControlNetConfig`; the memory-model switches do not change
    this module) plus ``in_channels`` (36, the ControlNet latent input), ``out_dim`` (backbone width D,
    the width of ``proj_out.{i}``; 5120 in the release) and ``patch_size`` ((1, 2, 2)). Build it from
    a ``ControlNetConfig`` with :meth:`from_controlnet_config`.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["ControlNetBlock"]
    _repeated_blocks = ["ControlNetBlock"]
    _skip_layerwise_casting_patterns = ["controlnet_patch_embedding", "controlnet_mask_embedding", "norm"]

    @register_to_config
    def __init__(self, dim: int, ffn_dim: int, num_heads: int, time_embed_dim: int, num_layers: int,
                 conv_out_dim: int, add_channels: int = 1, mid_channels: int = 64, mask_downsample: int = 4,
                 interp: bool = False, in_channels: int = 36, out_dim: int = 5120,
                 patch_size: Sequence[int] = (1, 2, 2)) -> None:
        super().__init__()
        cfg = ControlNetConfig(dim=dim, ffn_dim=ffn_dim, num_heads=num_heads, time_embed_dim=time_embed_dim,
                               num_layers=num_layers, conv_out_dim=conv_out_dim, add_channels=add_channels,
                               mid_channels=mid_channels, mask_downsample=mask_downsample, interp=interp)
        cfg.validate()
        patch_size = tuple(int(p) for p in patch_size)
        self.proj_in: nn.Module = nn.Linear(conv_out_dim, dim) if conv_out_dim != dim else nn.Identity()
        self.controlnet_blocks = nn.ModuleList(
            [ControlNetBlock(dim, ffn_dim, num_heads, time_embed_dim) for _ in range(num_layers)]
        )
        self.proj_out = nn.ModuleList([nn.Linear(dim, out_dim) for _ in range(num_layers)])
        self.controlnet_patch_embedding = nn.Conv3d(in_channels, conv_out_dim, kernel_size=patch_size,
                                                    stride=patch_size)
        self.controlnet_mask_embedding = MaskCamEmbed(add_channels, mid_channels, conv_out_dim, mask_downsample, interp)

    @classmethod
    def from_controlnet_config(cls, cfg: ControlNetConfig, in_channels: int, out_dim: int,
                               patch_size: Sequence[int] = (1, 2, 2)) -> "WanXControlNet":
        """Build from a reference ``controlnet_cfg`` (:class:`ControlNetConfig`)."""
        return cls(dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_heads=cfg.num_heads, time_embed_dim=cfg.time_embed_dim,
                   num_layers=cfg.num_layers, conv_out_dim=cfg.conv_out_dim, add_channels=cfg.add_channels,
                   mid_channels=cfg.mid_channels, mask_downsample=cfg.mask_downsample, interp=cfg.interp,
                   in_channels=in_channels, out_dim=out_dim, patch_size=tuple(patch_size))

    def embed(self, latent: Tensor, mask_camera: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """latent ``[B, 36, F, h, w]``, mask_camera ``[B, add_channels, F, 8h, 8w]`` →
        (input tokens, patch tokens, mask tokens), each ``[B, L, conv_out_dim]``."""
        patch = self.controlnet_patch_embedding(latent).flatten(2).transpose(1, 2)
        mask = self.controlnet_mask_embedding(mask_camera)
        if mask.shape != patch.shape:
            raise ValueError(f"render_mask/camera_embedding: mask embedding gives {tuple(mask.shape)} tokens but the "
                             f"latent gives {tuple(patch.shape)}; the mask and Plücker maps must be at full pixel "
                             f"resolution (8x the latent grid) with one frame per latent frame")
        return patch + mask, patch, mask

    def forward(self, latent: Tensor, mask_camera: Tensor, temb: Tensor, rotary_emb: tuple[Tensor, Tensor],
                output_dtype: torch.dtype | None = None) -> list[Tensor]:
        """Embed the inputs (:meth:`embed`) and run the blocks.

        Args:
            latent: ``[B, 36, F, h, w]`` = [noisy latent 16, I2V frame mask 4, render latent 16].
            mask_camera: ``[B, add_channels, F, 8h, 8w]`` hole mask (+ Plücker map).
            temb: ``[B, time_embed_dim]`` backbone time embedding.
            rotary_emb: ControlNet RoPE tables ``[1, L, 1, dim/num_heads]``.
            output_dtype: cast each residual to this dtype as soon as it is produced (the backbone
                dtype: the residuals are added to backbone tokens, so this is exactly the cast the
                addition would do, and it halves the memory of the N residuals kept alive when the
                ControlNet runs in float32 under a half backbone).
        Returns:
            N residuals ``[B, L, out_dim]``, one per leading backbone block.

        Everything happens inside ``forward`` so that diffusers' module hooks (group offloading,
        context-parallel splitting of the tokens at ``proj_in``) see the whole computation.
        """
        tokens, _, _ = self.embed(latent, mask_camera)
        x = self.proj_in(tokens)
        out = []
        for block, proj in zip(self.controlnet_blocks, self.proj_out):
            x = block(x, temb, rotary_emb)
            res = proj(x)
            out.append(res if output_dtype is None else res.to(output_dtype))
        return out
