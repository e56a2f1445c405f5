"""WorldStereo diffusion transformer (camera and memory variants), weight-compatible with the reference.

The backbone is diffusers' Wan2.1 I2V transformer, built from diffusers' Wan components
(``WanRotaryPosEmbed``, ``WanTimeTextImageEmbedding``, ``WanTransformerBlock`` parameters); the
state-dict keys are identical to the reference classes ``WorldStereoModel`` (camera) and
``WorldStereoRefSModel`` (memory). See ``reference-implementation.md`` §2.

Shapes (B batch, F latent frames, latent grid h×w, h' = h/2, w' = w/2, S = h'·w', L = F·S,
D backbone width, R references):

* ``hidden_states`` ``[B, 36, F, h, w]``: [noisy latent 16, I2V frame mask 4, condition latent 16].
* ``render_latent`` ``[B, 16, F, h, w]``; ``render_mask`` ``[B, 1, F, 8h, 8w]`` (1 = hole);
  ``camera_embedding`` ``[B, 6, F, 8h, 8w]`` Plücker map [direction, origin × direction].
* memory only: ``reference_latent`` ``[B, 36, R, h, w]`` = [z_ref, ones(4), z_ref];
  ``ref_index`` int64 ``[R]`` in [0, F−2]; ``camera_qt`` ``[B, F, 7]``, ``camera_qt_ref`` ``[B, R, 7]``.
* output ``[B, 16, F, h, w]`` flow velocity.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTimeTextImageEmbedding
from torch import Tensor, nn

from .attention import AttentionProcessorBase, check_attention_backend
from .config import WanBackboneConfig, WorldStereoConfig
from .controlnet import WanXControlNet
from .memory_block import WorldStereoBlock

__all__ = ["WorldStereoTransformer", "Transformer2DModelOutput", "REF_INDEX_EMBEDDING_SIZE"]

logger = logging.getLogger(__name__)

#: Rows of the (unused) ``ref_index_embedding`` of the release (hard-coded 21 = keyframes).
REF_INDEX_EMBEDDING_SIZE = 21
#: Keyword arguments the reference pipelines pass and the model ignores.
_IGNORED_KWARGS = frozenset({"point_map_latent", "point_map_ref_latent"})


def _rope_module(head_dim: int, patch_size: Sequence[int], max_seq_len: int) -> WanRotaryPosEmbed:
    return WanRotaryPosEmbed(head_dim, tuple(patch_size), max_seq_len)


class WorldStereoTransformer(nn.Module):
    """Wan2.1-I2V backbone + GGM ControlNet (+ SSM memory for the memory variants).

    Build with ``WorldStereoTransformer(config)`` (random weights, the release's zero-inits and
    ControlNet patch-embedding copy) or load with :meth:`from_reference_dir`. ``config.transformer``
    (the backbone config) must be set, or passed as ``backbone_config``.

    Attributes:
        config: the :class:`WorldStereoConfig` (with ``transformer`` filled in).
        is_memory: True for ``worldstereo-memory`` / ``worldstereo-memory-dmd``.
    """

    _keep_in_fp32_modules = ["time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]

    def __init__(self, config: WorldStereoConfig, backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None
                 ) -> None:
        super().__init__()
        if not isinstance(config, WorldStereoConfig):
            raise TypeError(f"config: expected WorldStereoConfig, got {type(config).__name__}")
        if backbone_config is not None:
            config = config.with_backbone(backbone_config)
        if config.transformer is None:
            raise ValueError("config.transformer: the backbone config is missing; pass backbone_config= "
                             "(the diffusers transformer config of the base model)")
        config.check_backbone(config.transformer)
        self.config = config
        bb = config.transformer
        cn = config.controlnet_cfg
        D = bb.inner_dim
        self.inner_dim = D
        self.is_memory = config.is_memory

        # backbone (names and registration order as diffusers WanTransformer3DModel)
        self.rope = _rope_module(bb.attention_head_dim, bb.patch_size, bb.rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(bb.in_channels, D, kernel_size=bb.patch_size, stride=bb.patch_size)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=D, time_freq_dim=bb.freq_dim, time_proj_dim=6 * D, text_embed_dim=bb.text_dim,
            image_embed_dim=bb.image_dim, pos_embed_seq_len=bb.pos_embed_seq_len,
        )
        self.blocks = nn.ModuleList([
            WorldStereoBlock(D, bb.ffn_dim, bb.num_attention_heads, bb.qk_norm or "rms_norm_across_heads",
                             bb.cross_attn_norm, bb.eps, bb.added_kv_proj_dim)
            for _ in range(bb.num_layers)
        ])
        self.norm_out = FP32LayerNorm(D, bb.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(D, bb.out_channels * math.prod(bb.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, D) / D**0.5)

        # GGM ControlNet
        self.controlnet = WanXControlNet(cn, in_channels=bb.in_channels, out_dim=D, patch_size=bb.patch_size)
        self.controlnet_rope = _rope_module(cn.head_dim, bb.patch_size, 1024)

        # memory-model extras
        self.ref_index_embedding: nn.Embedding | None = None
        self.camera_embedding: nn.Sequential | None = None
        if self.is_memory:
            if cn.ref_embedding:
                self.ref_index_embedding = nn.Embedding(REF_INDEX_EMBEDDING_SIZE, D)
            if cn.main_camera_embedding:
                cam_dim = int(cn.camera_embedding_dim)  # validated non-None
                self.camera_embedding = nn.Sequential(
                    nn.Linear(cam_dim, D // 2), nn.SiLU(), nn.Linear(D // 2, D), nn.SiLU(), nn.Linear(D, D)
                )
        self._init_like_reference()

    # ------------------------------------------------------------------ construction helpers
    @torch.no_grad()
    def _init_like_reference(self) -> None:
        """Zero-init what the release zero-inits and copy the backbone patch embedding into the ControlNet."""
        if self.patch_embedding.weight.is_meta:
            return
        for proj in self.controlnet.proj_out:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.controlnet.controlnet_mask_embedding.mask_zero_proj.weight)
        nn.init.zeros_(self.controlnet.controlnet_mask_embedding.mask_zero_proj.bias)
        self.controlnet.controlnet_patch_embedding.weight.copy_(self.patch_embedding.weight)
        self.controlnet.controlnet_patch_embedding.bias.copy_(self.patch_embedding.bias)
        if self.camera_embedding is not None:
            nn.init.zeros_(self.camera_embedding[4].weight)
            nn.init.zeros_(self.camera_embedding[4].bias)
        if self.ref_index_embedding is not None:
            nn.init.zeros_(self.ref_index_embedding.weight)

    def _rebuild_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent RoPE tables (needed after building on the meta device)."""
        bb = self.config.transformer
        assert bb is not None
        self.rope = _rope_module(bb.attention_head_dim, bb.patch_size, bb.rope_max_seq_len).to(device)
        self.controlnet_rope = _rope_module(self.config.controlnet_cfg.head_dim, bb.patch_size, 1024).to(device)

    @classmethod
    def from_config(cls, config: WorldStereoConfig | Mapping[str, Any],
                    backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None) -> "WorldStereoTransformer":
        """Randomly initialised model from a :class:`WorldStereoConfig` or a reference config dict."""
        if not isinstance(config, WorldStereoConfig):
            config = WorldStereoConfig.from_dict(config)
        return cls(config, backbone_config=backbone_config)

    @classmethod
    def from_reference_dir(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = torch.float32,
                           backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None,
                           device: torch.device | str = "cpu", allow_pickle: bool = False) -> "WorldStereoTransformer":
        """Load ``config.json`` + ``model.safetensors`` from a reference checkpoint sub-folder or a
        conformance case directory. See :func:`worldstereo.models.checkpoint.load_transformer`."""
        from .checkpoint import load_transformer  # noqa: PLC0415  (avoid an import cycle)

        return load_transformer(directory, torch_dtype=torch_dtype, backbone_config=backbone_config, device=device,
                                allow_pickle=allow_pickle)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        """Backbone compute dtype (the patch-embedding dtype; keep-fp32 modules may differ)."""
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    @property
    def backbone_config(self) -> WanBackboneConfig:
        assert self.config.transformer is not None
        return self.config.transformer

    # ------------------------------------------------------------------ attention backend
    def attention_processors(self) -> Iterator[AttentionProcessorBase]:
        """All attention processors (backbone self/joint and cross attention, ControlNet)."""
        for block in self.blocks:
            yield from block.attention_processors()
        for block in self.controlnet.controlnet_blocks:
            yield block.self_attn.processor

    def set_attention_backend(self, backend: str) -> None:
        """Use ``"sdpa"`` (default) or ``"xformers"`` for every attention of the model.

        Raises:
            ValueError: unknown backend; ImportError: xformers requested but not installed.
        """
        check_attention_backend(backend)
        for proc in self.attention_processors():
            proc.set_backend(backend)

    @property
    def attention_backend(self) -> str:
        return next(iter(self.attention_processors())).backend

    def enable_xformers_memory_efficient_attention(self) -> None:
        """Same as ``set_attention_backend("xformers")`` (diffusers-style name)."""
        self.set_attention_backend("xformers")

    def disable_xformers_memory_efficient_attention(self) -> None:
        self.set_attention_backend("sdpa")

    # ------------------------------------------------------------------ input validation
    def _check_inputs(self, hidden_states: Tensor, timestep: Tensor | float | int, encoder_hidden_states: Tensor,
                      encoder_hidden_states_image: Tensor | None, render_latent: Tensor | None,
                      render_mask: Tensor | None, camera_embedding: Tensor | None) -> Tensor:
        bb = self.backbone_config
        cn = self.config.controlnet_cfg
        if not isinstance(hidden_states, Tensor) or hidden_states.ndim != 5:
            raise ValueError(f"hidden_states: expected a [B, {bb.in_channels}, F, h, w] tensor, got "
                             f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}")
        B, C, Fr, h, w = hidden_states.shape
        if C != bb.in_channels:
            raise ValueError(f"hidden_states: expected {bb.in_channels} channels, got shape {tuple(hidden_states.shape)}")
        _, ph, pw = bb.patch_size
        if h % ph or w % pw or h == 0 or w == 0 or Fr == 0:
            raise ValueError(f"hidden_states: latent grid {h}x{w} must be non-empty multiples of the patch size "
                             f"({ph}, {pw})")
        if not isinstance(timestep, Tensor):
            timestep = torch.tensor(timestep)
        if timestep.is_complex() or timestep.dtype == torch.bool:
            raise TypeError(f"timestep: expected a real tensor, got dtype {timestep.dtype}")
        if timestep.ndim == 0:
            timestep = timestep.reshape(1)
        if timestep.ndim != 1 or timestep.shape[0] not in (1, B):
            raise ValueError(f"timestep: expected shape [{B}] (one per sample) or a scalar, got {tuple(timestep.shape)}")
        if timestep.shape[0] != B:
            timestep = timestep.expand(B)
        if not isinstance(encoder_hidden_states, Tensor) or encoder_hidden_states.ndim != 3 or \
                encoder_hidden_states.shape[0] != B or encoder_hidden_states.shape[2] != bb.text_dim:
            raise ValueError(f"encoder_hidden_states: expected [{B}, 512, {bb.text_dim}], got "
                             f"{tuple(getattr(encoder_hidden_states, 'shape', ()))}")
        if bb.image_dim is not None:
            if encoder_hidden_states.shape[1] != 512:
                raise ValueError(f"encoder_hidden_states: the I2V cross-attention needs exactly 512 text tokens, got "
                                 f"{encoder_hidden_states.shape[1]}")
            if encoder_hidden_states_image is None:
                raise ValueError("encoder_hidden_states_image: required (CLIP image tokens [B, 257, image_dim])")
            e = encoder_hidden_states_image
            if e.ndim != 3 or e.shape[0] != B or e.shape[2] != bb.image_dim or e.shape[1] == 0:
                raise ValueError(f"encoder_hidden_states_image: expected [{B}, N>0, {bb.image_dim}], got {tuple(e.shape)}")
        if render_latent is None or render_mask is None:
            raise ValueError("render_latent and render_mask: both are required (GGM ControlNet inputs)")
        n_lat = bb.in_channels - 20
        if render_latent.shape != (B, n_lat, Fr, h, w):
            raise ValueError(f"render_latent: expected shape {(B, n_lat, Fr, h, w)}, got {tuple(render_latent.shape)}")
        if render_mask.ndim != 5 or render_mask.shape[0] != B or render_mask.shape[1] != 1:
            raise ValueError(f"render_mask: expected [{B}, 1, F, 8h, 8w], got {tuple(render_mask.shape)}")
        exp_pix = (h * 8, w * 8)
        if tuple(render_mask.shape[3:]) != exp_pix:
            raise ValueError(f"render_mask: spatial size must be the full pixel resolution {exp_pix} (8x the latent "
                             f"grid), got {tuple(render_mask.shape[3:])}")
        n_cam = cn.add_channels - 1
        if n_cam == 0:
            if camera_embedding is not None:
                raise ValueError("camera_embedding: this model has add_channels=1 (mask only); pass None")
        else:
            if camera_embedding is None:
                raise ValueError(f"camera_embedding: required ([B, {n_cam}, F, 8h, 8w] Plücker map), "
                                 f"controlnet_cfg.add_channels={cn.add_channels}")
            if camera_embedding.ndim != 5 or camera_embedding.shape[1] != n_cam or \
                    camera_embedding.shape[0] != B or camera_embedding.shape[2:] != render_mask.shape[2:]:
                raise ValueError(f"camera_embedding: expected [{B}, {n_cam}, *render_mask spatial dims "
                                 f"{tuple(render_mask.shape[2:])}], got {tuple(camera_embedding.shape)}")
        md = cn.mask_downsample
        n_mask_frames = render_mask.shape[2]
        pad = (md - 1) * (2 if cn.interp else 1) if md > 1 else 0
        if (n_mask_frames + pad) // md != Fr or (n_mask_frames + pad) % md:
            raise ValueError(f"render_mask: {n_mask_frames} frames do not map to {Fr} latent frames with "
                             f"mask_downsample={md}")
        return timestep

    def _check_memory_inputs(self, B: int, Fr: int, h: int, w: int, reference_latent: Tensor | None,
                             ref_index: Any, camera_qt: Tensor | None, camera_qt_ref: Tensor | None
                             ) -> tuple[Tensor, Tensor]:
        bb = self.backbone_config
        if reference_latent is None:
            raise ValueError(f"reference_latent: required by the memory model ([B, {bb.in_channels}, R, h, w])")
        if reference_latent.ndim != 5 or reference_latent.shape[0] != B or \
                reference_latent.shape[1] != bb.in_channels or tuple(reference_latent.shape[3:]) != (h, w):
            raise ValueError(f"reference_latent: expected [{B}, {bb.in_channels}, R, {h}, {w}], got "
                             f"{tuple(reference_latent.shape)}")
        R = reference_latent.shape[2]
        if ref_index is None:
            raise ValueError(f"ref_index: required by the memory model (int64 [R={R}] with values in [0, F-2])")
        if isinstance(ref_index, (list, tuple)):
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ref_index):
                raise TypeError(f"ref_index: expected integers, got {ref_index!r}")
            ref_index = torch.tensor(ref_index, dtype=torch.long)
        if not isinstance(ref_index, Tensor):
            raise TypeError(f"ref_index: expected a LongTensor [R], got {type(ref_index).__name__}")
        if ref_index.is_floating_point() or ref_index.is_complex() or ref_index.dtype == torch.bool:
            raise TypeError(f"ref_index: expected an integer tensor (int64), got dtype {ref_index.dtype}")
        if ref_index.ndim != 1 or ref_index.shape[0] != R:
            raise ValueError(f"ref_index: expected shape [{R}] (one slot per reference), got {tuple(ref_index.shape)}")
        if R > 0:
            lo, hi = int(ref_index.min()), int(ref_index.max())
            if lo < 0 or hi > Fr - 2:
                raise ValueError(f"ref_index: values must lie in [0, F-2] = [0, {Fr - 2}] (reference k is placed at "
                                 f"RoPE frame ref_index[k]+1), got min {lo}, max {hi}")
        cam_dim = self.config.controlnet_cfg.camera_embedding_dim
        for name, t, n in (("camera_qt", camera_qt, Fr), ("camera_qt_ref", camera_qt_ref, R)):
            if t is None:
                continue
            if self.camera_embedding is None:
                raise ValueError(f"{name}: this model has no camera embedding (controlnet_cfg.main_camera_embedding "
                                 f"is false); pass None")
            if t.ndim != 3 or tuple(t.shape) != (B, n, cam_dim):
                raise ValueError(f"{name}: expected shape {(B, n, cam_dim)}, got {tuple(t.shape)}")
        return reference_latent, ref_index.to(torch.long)

    # ------------------------------------------------------------------ forward
    def _reference_rope(self, Fr: int, hp: int, wp: int, ref_index: Tensor, device: torch.device
                        ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Stereo-stitched RoPE: tables on an F × h' × 2w' grid; targets take columns [0, w'),
        reference k takes frame ref_index[k]+1 and columns [w', 2w')."""
        _, ph, pw = self.backbone_config.patch_size
        dummy = torch.empty((1, 1, Fr, hp * ph, 2 * wp * pw), device="meta")
        cos, sin = self.rope(dummy)  # [1, F*hp*2wp, 1, Dh]
        idx = ref_index.to(cos.device) + 1
        out = []
        for table in (cos, sin):
            grid = table.reshape(Fr, hp, 2 * wp, table.shape[-1])
            tgt = grid[:, :, :wp].reshape(1, Fr * hp * wp, 1, -1)
            ref = grid[idx][:, :, wp:].reshape(1, idx.shape[0] * hp * wp, 1, -1)
            out.append((tgt.to(device), ref.to(device)))
        return (out[0][0], out[1][0]), (out[0][1], out[1][1])

    def forward(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_hidden_states_image: Tensor | None = None,
        *,
        render_latent: Tensor | None = None,
        render_mask: Tensor | None = None,
        camera_embedding: Tensor | None = None,
        reference_latent: Tensor | None = None,
        ref_index: Tensor | Sequence[int] | None = None,
        camera_qt: Tensor | None = None,
        camera_qt_ref: Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        extrinsics: Tensor | None = None,
        intrinsics: Tensor | None = None,
        intermediates: dict[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> Transformer2DModelOutput | tuple[Tensor]:
        """Predict the flow velocity.

        Args:
            hidden_states: ``[B, 36, F, h, w]`` model input (noisy latent, I2V mask, condition latent).
            timestep: ``[B]`` (or scalar) diffusion timesteps in [0, 1000]; float values are embedded as
                given (never rounded), integer tensors are converted to float.
            encoder_hidden_states: ``[B, 512, text_dim]`` text embeddings (padded rows zero).
            encoder_hidden_states_image: ``[B, 257, image_dim]`` CLIP tokens.
            render_latent: ``[B, 16, F, h, w]`` keyframe latent of the point-cloud render.
            render_mask: ``[B, 1, F, 8h, 8w]`` hole mask at full pixel resolution (1 = hole).
            camera_embedding: ``[B, 6, F, 8h, 8w]`` Plücker map (required when add_channels = 7).
            reference_latent: memory model: ``[B, 36, R, h, w]`` reference latents [z, ones(4), z].
            ref_index: memory model: integer ``[R]``, target slot that retrieved each reference, in [0, F-2].
            camera_qt, camera_qt_ref: memory model: ``[B, F, 7]`` / ``[B, R, 7]`` camera tokens
                (quaternion wxyz + translation of the normalised w2c); each skipped when None.
            return_dict: return a ``Transformer2DModelOutput`` (``.sample``) instead of a 1-tuple.
            attention_kwargs: accepted for diffusers compatibility; unused.
            extrinsics, intrinsics: accepted like the reference camera model (checked finite) and ignored.
            intermediates: optional dict filled with debug tensors (names of the conformance data).
            **kwargs: ``point_map_latent`` / ``point_map_ref_latent`` are accepted and ignored.
        Returns:
            ``[B, 16, F, h, w]`` in the backbone dtype, wrapped as requested.
        """
        unknown = set(kwargs) - _IGNORED_KWARGS
        if unknown:
            raise TypeError(f"forward() got unexpected keyword arguments {sorted(unknown)}")
        for name, t in (("extrinsics", extrinsics), ("intrinsics", intrinsics)):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{name}: contains non-finite values")
        timestep = self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                      render_latent, render_mask, camera_embedding)
        B, _, Fr, h, w = hidden_states.shape
        _, ph, pw = self.backbone_config.patch_size
        hp, wp = h // ph, w // pw
        if self.is_memory:
            reference_latent, ref_index_t = self._check_memory_inputs(B, Fr, h, w, reference_latent, ref_index,
                                                                      camera_qt, camera_qt_ref)
        elif reference_latent is not None or ref_index is not None or camera_qt is not None or camera_qt_ref is not None:
            raise ValueError("reference_latent/ref_index/camera_qt/camera_qt_ref: the camera model "
                             f"({self.config.model_type}) takes no references; use a memory model")
        cap = intermediates
        dtype = self.dtype
        device = self.device
        assert render_latent is not None and render_mask is not None

        # ControlNet embedding of [noisy 16, frame mask 4, render latent 16] + mask/camera map
        cn_dtype = self.controlnet.controlnet_patch_embedding.weight.dtype
        x_c = torch.cat([hidden_states[:, :20], render_latent.to(hidden_states.dtype)], dim=1).to(cn_dtype)
        mask_cam = render_mask if camera_embedding is None else torch.cat([render_mask, camera_embedding], dim=1)
        cn_rope = self.controlnet_rope(x_c)
        cn_tokens, cn_patch, cn_mask = self.controlnet.embed(x_c, mask_cam.to(cn_dtype))

        # backbone embeddings
        if self.is_memory:
            rope, ref_rope = self._reference_rope(Fr, hp, wp, ref_index_t, hidden_states.device)
        else:
            rope, ref_rope = self.rope(hidden_states), None
        x = self.patch_embedding(hidden_states.to(dtype)).flatten(2).transpose(1, 2).contiguous()
        if cap is not None:
            cap["patch_embed"] = x
        ref0 = None
        if self.is_memory:
            assert reference_latent is not None
            ref0 = self.patch_embedding(reference_latent.to(dtype)).flatten(2).transpose(1, 2).contiguous()
            if cap is not None:
                cap["ref_patch_embed"] = ref0
            if self.camera_embedding is not None:
                cam_dtype = self.camera_embedding[0].weight.dtype
                S = hp * wp
                if camera_qt is not None:
                    tok = self.camera_embedding(camera_qt.to(cam_dtype))
                    x = x + tok.repeat_interleave(S, dim=1).to(dtype)
                    if cap is not None:
                        cap["camera_token"] = tok
                if camera_qt_ref is not None:
                    tok = self.camera_embedding(camera_qt_ref.to(cam_dtype))
                    ref0 = ref0 + tok.repeat_interleave(S, dim=1).to(dtype)
                    if cap is not None:
                        cap["camera_token_ref"] = tok

        temb, timestep_proj, text_ctx, image_ctx = self.condition_embedder(
            timestep.to(device), encoder_hidden_states.to(dtype),
            encoder_hidden_states_image.to(dtype) if encoder_hidden_states_image is not None else None,
        )
        if cap is not None:
            cap.update(temb=temb, timestep_proj=timestep_proj, text_context=text_ctx,
                       controlnet_patch_embed=cn_patch, mask_cam_embed=cn_mask, controlnet_input_tokens=cn_tokens,
                       rope_cos=rope[0], rope_sin=rope[1], controlnet_rope_cos=cn_rope[0],
                       controlnet_rope_sin=cn_rope[1])
            if image_ctx is not None:
                cap["image_context"] = image_ctx
            if ref_rope is not None:
                cap.update(ref_rope_cos=ref_rope[0], ref_rope_sin=ref_rope[1])
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        context = text_ctx if image_ctx is None else torch.cat([image_ctx, text_ctx], dim=1)

        cn_states = self.controlnet(cn_tokens, temb.to(cn_dtype), cn_rope)
        if cap is not None:
            for i, s in enumerate(cn_states):
                cap[f"controlnet_state_{i}"] = s

        ref = ref0
        update_ref = bool(self.config.controlnet_cfg.update_ref)
        for i, block in enumerate(self.blocks):
            if cap is not None:
                cap[f"block_{i}_in"] = x
            if self.is_memory:
                ref_in = ref if update_ref else ref0
                if cap is not None:
                    cap[f"block_{i}_ref_in"] = ref_in
                x, ref = block(x, context, timestep_proj, rope, ref_in, ref_rope)
                if cap is not None:
                    cap[f"block_{i}_ref_out"] = ref
            else:
                x = block(x, context, timestep_proj, rope)
            if cap is not None:
                cap[f"block_{i}_out"] = x
            if i < len(cn_states):
                x = x + cn_states[i].to(x.dtype)

        # output head
        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)
        if cap is not None:
            cap["proj_out"] = x
        p_t, _, _ = self.backbone_config.patch_size
        x = x.reshape(B, Fr // p_t, hp, wp, p_t, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)
