"""Memory tiers (what each places where) and the expected peak accelerator memory of a WorldStereo
generation under each (pure data and arithmetic; :mod:`worldstereo.optimization` applies the tiers).

The estimate is ``max`` over the stages of a generation (text encoding, CLIP image encoding, VAE
encode/decode, denoising) of *weights on the accelerator during the stage* + *activations of the
stage*, plus a fixed allowance for the CUDA context and allocator fragmentation. Weights come from
parameter counts (exact for the transformer, built from its config on the meta device) times the
bytes per parameter each tier stores on the accelerator; activations from the token counts.

Assumptions (state them when you quote a number):

* batch 1, one forward at a time (classifier-free guidance runs its two passes one after the other);
* the transformer computes in bfloat16 with the reference dtype policy (keep-fp32 backbone modules
  and, in the lossless tiers, the ControlNet and camera MLP in float32); text and CLIP encoders in
  float32 as the reference (bfloat16 in the lossy tiers); VAE in bfloat16;
* attention through a memory-efficient kernel (flash / cuDNN / xFormers: no L×L score matrix);
* peak activation of a backbone block ≈ :data:`BLOCK_ACTIVATION_BYTES` bytes per token per channel,
  counted from the tensors alive at once in :mod:`worldstereo.models.attention` during the
  self-attention: bf16 hidden states and modulated input (2 + 2), the concatenated streams (2),
  q/k/v (6) and the float32 RMS-norm / RoPE temporaries (≈ 16); the FFN phase stays below it;
* the N ControlNet residuals ``[L, D]`` are all alive during the backbone pass (bf16);
* the VAE decodes one keyframe at a time (:data:`VAE_DECODE_BYTES_PER_PIXEL` bytes per output pixel);
* group offloading keeps the current and the prefetched group on the accelerator, plus the
  top-level modules outside the blocks;
* :data:`RESERVED_GB` for the CUDA context, cuBLAS workspaces and fragmentation.

The release's ControlNet config is not public in this project (``config.json`` of the checkpoint);
:data:`ASSUMED_CONTROLNET` (width 1024, 16 heads, 20 layers, FFN 4096, ≈1.0 B parameters, the
Uni3C ControlNet it derives from) is used unless the caller passes the real parameter counts
(:func:`parameter_counts_of` on a loaded model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from worldstereo.models.config import WanBackboneConfig, WorldStereoConfig

__all__ = [
    "MEMORY_TIERS",
    "MemoryTier",
    "get_memory_tier",
    "suggest_memory_tier",
    "ASSUMED_CONTROLNET",
    "BLOCK_ACTIVATION_BYTES",
    "RESERVED_GB",
    "VAE_DECODE_BYTES_PER_PIXEL",
    "ParameterCounts",
    "release_parameter_counts",
    "parameter_counts_of",
    "token_counts",
    "estimate_peak_vram_gb",
]

GB = 1e9
#: Peak bytes per (token × backbone channel) inside a backbone block (see the module docstring).
BLOCK_ACTIVATION_BYTES = 28.0
#: CUDA context + library workspaces + allocator fragmentation.
RESERVED_GB = 1.5
#: Peak bytes per output pixel of a one-keyframe VAE decode (bf16 feature maps of the Wan VAE decoder).
VAE_DECODE_BYTES_PER_PIXEL = 4000.0
#: ControlNet config assumed for the release (not public here; see the module docstring).
ASSUMED_CONTROLNET: dict[str, Any] = {
    "dim": 1024, "ffn_dim": 4096, "num_heads": 16, "time_embed_dim": 5120, "num_layers": 20,
    "conv_out_dim": 5120, "add_channels": 7, "mid_channels": 64, "mask_downsample": 1,
}
_TEXT_LEN = 512
_TEXT_BLOCKS = 24  # UMT5-XXL encoder blocks
_VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")


# ------------------------------------------------------------------------------------- tiers
_PLACEMENTS = ("resident", "model_offload", "group_block", "group_leaf", "group_block_disk")
_WEIGHTS = ("as_loaded", "fp8_layerwise", "int8_weight_only", "float8_weight_only")


@dataclass(frozen=True)
class MemoryTier:
    """How a memory tier places a model on one accelerator.

    Attributes:
        name: the tier name (an entry of :data:`MEMORY_TIERS`).
        placement: ``"resident"`` (everything on the accelerator), ``"model_offload"``
            (:func:`enable_model_cpu_offload`, the ControlNet its own component), ``"group_block"`` /
            ``"group_leaf"`` (diffusers group offloading of the backbone, the ControlNet and the text
            encoder with CUDA streams and prefetching; block level = one transformer block at a time,
            leaf level = one layer at a time), ``"group_block_disk"`` (block level, offloaded weights
            kept on disk instead of in RAM).
        weights: ``"as_loaded"`` (lossless), ``"fp8_layerwise"`` (float8 e4m3 storage, bfloat16 compute:
            diffusers layerwise casting of the backbone and ControlNet; text encoder in bfloat16),
            ``"int8_weight_only"`` / ``"float8_weight_only"`` (torchao weight-only quantization of the
            transformer and the text encoder, bfloat16 compute).
        description: one line for ``--help`` and docs.
    """

    name: str
    placement: str
    weights: str
    description: str

    @property
    def lossy(self) -> bool:
        """Whether the tier changes the numbers (weights stored or computed in lower precision)."""
        return self.weights != "as_loaded"

    @property
    def needs_accelerator(self) -> bool:
        """Offloading tiers only make sense with (and group offloading needs) a CUDA/XPU accelerator."""
        return self.placement != "resident"

    @property
    def needs_torchao(self) -> bool:
        return self.weights in ("int8_weight_only", "float8_weight_only")


_TIERS: tuple[MemoryTier, ...] = (
    MemoryTier("resident", "resident", "as_loaded", "everything on the accelerator (fastest, most memory)"),
    MemoryTier("model_offload", "model_offload", "as_loaded",
               "model CPU offload: one component at a time on the accelerator, the ControlNet swapped on its own"),
    MemoryTier("group_offload", "group_block", "as_loaded",
               "group offloading, one transformer block at a time, CUDA streams with prefetching (lossless)"),
    MemoryTier("group_offload_leaf", "group_leaf", "as_loaded",
               "group offloading, one layer at a time, CUDA streams with prefetching (lossless, least memory)"),
    MemoryTier("group_offload_disk", "group_block_disk", "as_loaded",
               "block-level group offloading with the offloaded weights on disk (machines with little RAM)"),
    MemoryTier("fp8", "resident", "fp8_layerwise",
               "fp8 weight storage with bf16 compute (layerwise casting), everything resident (lossy)"),
    MemoryTier("int8", "resident", "int8_weight_only",
               "torchao int8 weight-only transformer and text encoder, resident (lossy; needs torchao)"),
    MemoryTier("float8", "resident", "float8_weight_only",
               "torchao float8 weight-only transformer and text encoder, resident (lossy; needs torchao)"),
    MemoryTier("fp8_model_offload", "model_offload", "fp8_layerwise", "fp8 storage + model CPU offload (lossy)"),
    MemoryTier("int8_model_offload", "model_offload", "int8_weight_only",
               "torchao int8 weight-only + model CPU offload (lossy; needs torchao)"),
    MemoryTier("fp8_group_offload", "group_block", "fp8_layerwise", "fp8 storage + block-level group offloading (lossy)"),
    MemoryTier("fp8_group_offload_leaf", "group_leaf", "fp8_layerwise",
               "fp8 storage + leaf-level group offloading (lossy; the smallest footprint)"),
)
#: Memory tier names, from the most to the least accelerator memory (roughly; see docs/performance.md).
MEMORY_TIERS: tuple[str, ...] = tuple(t.name for t in _TIERS)
_BY_NAME = {t.name: t for t in _TIERS}
#: Modules whose precision matters most: never quantized by the lossy tiers (the patterns diffusers'
#: layerwise casting skips: embeddings, norms and adaLN modulations, output heads).
PRECISION_CRITICAL_PATTERNS = ("patch_embed", "condition_embedder", "norm", "^proj_out$", "proj_out\\.",
                               "time_embedder", "rope", "mask_embedding", "^proj_in$")
#: Tiers :func:`suggest_memory_tier` considers, in order of preference (fastest first); lossy ones last.
_SUGGESTION_ORDER = ("resident", "group_offload", "model_offload", "group_offload_leaf", "fp8_group_offload",
                     "fp8_group_offload_leaf")
def get_memory_tier(tier: str | MemoryTier, name: str = "tier") -> MemoryTier:
    """The :class:`MemoryTier` of a name (or the tier itself).

    Raises:
        ValueError: unknown name (the message lists :data:`MEMORY_TIERS`).
    """
    if isinstance(tier, MemoryTier):
        return tier
    if not isinstance(tier, str) or tier not in _BY_NAME:
        raise ValueError(f"{name}: expected one of {list(MEMORY_TIERS)}, got {tier!r}")
    return _BY_NAME[tier]



# ----------------------------------------------------------------------------- parameter counts
@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of the components (numbers of parameters, not bytes) and the widths the
    activation estimate needs.

    Attributes:
        backbone_blocks: all backbone blocks; ``num_blocks`` of them.
        backbone_other: backbone parameters outside the blocks (embeddings, output head, camera MLP).
        controlnet_blocks: ControlNet blocks + their output projections; ``controlnet_layers`` of them.
        controlnet_other: ControlNet embeddings and ``proj_in``.
        text_encoder: UMT5 encoder, of which ``text_embedding`` is the token embedding.
        image_encoder: CLIP vision tower.
        vae: Wan VAE.
        width, ffn: backbone width D and FFN width; controlnet_width: ControlNet width d.
        largest_text_layer, largest_image_layer: parameters of the biggest linear layer of the encoders
            (what leaf-level offloading holds besides the token embedding).
        controlnet_kept: ControlNet block parameters the lossy tiers keep in bf16
            (:data:`PRECISION_CRITICAL_PATTERNS`: adaLN modulations, output projections).
    """

    backbone_blocks: float
    num_blocks: int
    backbone_other: float
    controlnet_blocks: float
    controlnet_layers: int
    controlnet_other: float
    text_encoder: float
    text_embedding: float
    image_encoder: float
    vae: float
    width: int = 5120
    ffn: int = 13824
    controlnet_width: int = 1024
    largest_text_layer: float = 4096 * 10240
    largest_image_layer: float = 1280 * 5120
    controlnet_kept: float = 0.0

    @property
    def transformer(self) -> float:
        return self.backbone_blocks + self.backbone_other + self.controlnet_blocks + self.controlnet_other


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _largest_linear(module: Any) -> int:
    import torch  # noqa: PLC0415

    sizes = [m.weight.numel() for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]
    return max(sizes, default=0)


def parameter_counts_of(model: Any) -> ParameterCounts:
    """Exact :class:`ParameterCounts` of a built :class:`~worldstereo.models.worldstereo.WorldStereo`
    (a bare transformer: the encoders get the release sizes)."""
    transformer = model._modules.get("transformer", model)
    cn = transformer.controlnet
    cn_blocks = _count(cn.controlnet_blocks) + _count(cn.proj_out)
    bb_blocks = _count(transformer.blocks)
    te = model._modules.get("text_encoder")
    ie = model._modules.get("image_encoder")
    vae = model._modules.get("vae")
    emb = getattr(getattr(te, "shared", None), "weight", None)
    bb = transformer.backbone_config
    kept = sum(p.numel() for name, p in cn.named_parameters()
               if name.startswith(("controlnet_blocks.", "proj_out."))
               and any(re.search(pat, name.rsplit(".", 1)[0]) for pat in PRECISION_CRITICAL_PATTERNS))
    counts = ParameterCounts(
        backbone_blocks=bb_blocks, num_blocks=len(transformer.blocks),
        backbone_other=_count(transformer) - bb_blocks - _count(cn),
        controlnet_blocks=cn_blocks, controlnet_layers=len(cn.controlnet_blocks),
        controlnet_other=_count(cn) - cn_blocks,
        text_encoder=_count(te) if te is not None else _RELEASE_ENCODERS["text_encoder"],
        text_embedding=(emb.numel() if emb is not None else 0) if te is not None
        else _RELEASE_ENCODERS["text_embedding"],
        image_encoder=_count(ie) if ie is not None else _RELEASE_ENCODERS["image_encoder"],
        vae=_count(vae) if vae is not None else _RELEASE_ENCODERS["vae"],
        width=transformer.inner_dim, ffn=bb.ffn_dim,
        controlnet_width=transformer.worldstereo_config.controlnet_cfg.dim,
        largest_text_layer=_largest_linear(te) if te is not None else ParameterCounts.largest_text_layer,
        largest_image_layer=_largest_linear(ie) if ie is not None else ParameterCounts.largest_image_layer,
        controlnet_kept=kept,
    )
    return counts


#: UMT5-XXL encoder (5.68 B, 1.05 B token embedding), CLIP ViT-H/14 vision tower, Wan2.1 VAE.
_RELEASE_ENCODERS = {"text_encoder": 5.680e9, "text_embedding": 1.050e9, "image_encoder": 0.632e9, "vae": 0.127e9}


def release_parameter_counts(variant: str = "worldstereo-memory",
                             controlnet: dict[str, Any] | None = None) -> ParameterCounts:
    """Parameter counts of the released model: the Wan2.1-I2V-14B backbone (exact, built from its
    config on the meta device), the ControlNet (``controlnet`` or :data:`ASSUMED_CONTROLNET`),
    UMT5-XXL encoder (5.68 B, of which 1.05 B token embedding), CLIP ViT-H/14 vision tower (0.632 B)
    and the Wan VAE (0.127 B)."""
    import torch  # noqa: PLC0415  (keep this module importable without building anything)

    from worldstereo.models.transformer import WorldStereoTransformer  # noqa: PLC0415

    if variant not in _VARIANTS:
        raise ValueError(f"variant: expected one of {list(_VARIANTS)}, got {variant!r}")
    cn = dict(controlnet or ASSUMED_CONTROLNET)
    if variant != "worldstereo-camera":
        cn.update(update_ref=True, main_camera_embedding=True, camera_embedding_dim=7, ref_embedding=True)
    cfg = WorldStereoConfig.from_dict({
        "model_type": variant, "base_model": "", "nframe": 21, "freeze_backbone": True, "scale_map": None,
        "latent_cond_mode": "first_frame_only", "controlnet_cfg": cn,
        "transformer": WanBackboneConfig().to_dict()})
    with torch.device("meta"):
        tr = WorldStereoTransformer(cfg)
    return parameter_counts_of(tr)


def token_counts(height: int, width: int, num_frames: int, num_references: int, variant: str) -> tuple[int, int]:
    """(target tokens L, reference tokens R·S) of one forward: ``F · H/16 · W/16`` and
    ``R · H/16 · W/16`` (0 for the camera variant)."""
    if height % 16 or width % 16 or height <= 0 or width <= 0:
        raise ValueError(f"height/width: must be positive multiples of 16, got {height}x{width}")
    if num_frames <= 0 or num_references < 0:
        raise ValueError(f"num_frames/num_references: expected > 0 / >= 0, got {num_frames} / {num_references}")
    per_frame = (height // 16) * (width // 16)
    refs = 0 if variant == "worldstereo-camera" else num_references
    return num_frames * per_frame, refs * per_frame


def estimate_peak_vram_gb(tier: Any, variant: str = "worldstereo-memory", height: int = 480, width: int = 832,
                          num_frames: int = 21, num_references: int = 8,
                          counts: ParameterCounts | None = None) -> float:
    """Expected peak accelerator memory (GB = 1e9 bytes) of one generation under ``tier``.

    Formula (bytes; ``w_*`` weights on the accelerator, ``a_*`` activations)::

        a_backbone  = 28 · (L + R·S) · D                 one backbone block
        a_residuals = N_cn · L · D · 2                   the ControlNet residuals (bf16)
        a_control   = 2 · 28 · L · d + 4 · L · D          one ControlNet block (fp32) + its input tokens
        resident      : Σ w + max(a_text, a_backbone + a_residuals, a_vae)
        model_offload : max(w_text + a_text, w_clip, w_vae + a_vae,
                            w_backbone + w_controlnet + a_residuals + a_control,
                            w_backbone + a_residuals + a_backbone)
        group_*       : w_vae + max(text stage, image stage, a_vae,
                                    w_top + 2 · w_group + a_residuals + a_backbone)
        + 1.5 GB (CUDA context, workspaces, fragmentation)

    with ``w_group`` one block (block level) or one layer (leaf level), ``w_top`` the modules outside
    the blocks. See the module docstring for the assumptions.

    Args:
        tier: a :class:`MemoryTier` or its name.
        variant: model variant (the camera variant has no reference tokens).
        height, width, num_frames: output video size (``num_frames`` keyframes = latent frames).
        num_references: references of the memory variants (8 = the reference's maximum).
        counts: parameter counts (default: :func:`release_parameter_counts` of ``variant``).
    """
    tier = get_memory_tier(tier)
    if variant not in _VARIANTS:
        raise ValueError(f"variant: expected one of {list(_VARIANTS)}, got {variant!r}")
    c = counts if counts is not None else release_parameter_counts(variant)
    L, Lr = token_counts(height, width, num_frames, num_references, variant)
    D, d = c.width, c.controlnet_width

    lossy = tier.weights != "as_loaded"
    # bytes per parameter on the accelerator: 1 for fp8 / int8 storage; else bf16 backbone and the
    # reference's float32 ControlNet and encoders. Token embeddings and precision-critical layers are
    # not quantized (bf16 in the lossy tiers).
    bb = 1.0 if lossy else 2.0
    cn = 1.0 if lossy else 4.0
    te = 1.0 if lossy else 4.0
    emb = 2.0 if lossy else 4.0
    w_backbone = c.backbone_blocks * bb + c.backbone_other * 2.0
    cn_blocks = ((c.controlnet_blocks - c.controlnet_kept) * cn + c.controlnet_kept * 2.0) if lossy \
        else c.controlnet_blocks * cn
    w_controlnet = cn_blocks + c.controlnet_other * (2.0 if lossy else 4.0)
    w_text = (c.text_encoder - c.text_embedding) * te + c.text_embedding * emb
    w_image = c.image_encoder * 4.0
    w_vae = c.vae * 2.0

    a_backbone = BLOCK_ACTIVATION_BYTES * (L + Lr) * D
    a_residuals = c.controlnet_layers * L * D * 2.0
    a_control = 2 * BLOCK_ACTIVATION_BYTES * L * d + 4.0 * L * D
    a_text = 64.0 * _TEXT_LEN * 4096
    a_vae = VAE_DECODE_BYTES_PER_PIXEL * height * width

    if tier.placement == "resident":
        peak = (w_backbone + w_controlnet + w_text + w_image + w_vae
                + max(a_text, a_backbone + a_residuals, a_control + a_residuals, a_vae))
    elif tier.placement == "model_offload":
        # the tier keeps the backbone resident while its ControlNet runs (keep_outer_resident)
        peak = max(w_text + a_text, w_image, w_vae + a_vae, w_backbone + w_controlnet + a_residuals + a_control,
                   w_backbone + a_residuals + a_backbone)
    else:
        if tier.placement == "group_leaf":
            largest = max(D * c.ffn, 6 * D * D)  # FFN matrix or the time projection
            w_groups = 2 * largest * bb
            w_top = 0.0
            image_stage = 2 * c.largest_image_layer * 4.0
        else:  # block level (also with disk storage)
            w_groups = 2 * max(c.backbone_blocks / max(c.num_blocks, 1) * bb,
                               cn_blocks / max(c.controlnet_layers, 1))
            w_top = c.backbone_other * 2.0 + c.controlnet_other * (2.0 if lossy else 4.0)
            image_stage = w_image
        if tier.placement == "group_leaf":
            text_group = c.largest_text_layer * te
        else:  # one UMT5 block (24 of them)
            text_group = (c.text_encoder - c.text_embedding) / _TEXT_BLOCKS * te
        text_stage = c.text_embedding * emb + 2 * text_group + a_text
        peak = w_vae + max(text_stage, image_stage, a_vae, w_top + w_groups + a_residuals + a_backbone)
    return peak / GB + RESERVED_GB


def suggest_memory_tier(gpu_memory_gb: float, variant: str = "worldstereo-memory", *, height: int = 480,
                        width: int = 832, num_frames: int = 21, num_references: int = 8,
                        allow_lossy: bool = True, counts: Any = None) -> str:
    """The fastest memory tier whose expected peak VRAM fits ``gpu_memory_gb``.

    Lossless tiers are preferred (``resident``, then ``group_offload`` — with CUDA streams its
    transfers hide behind the compute of a 14B block —, ``model_offload``, ``group_offload_leaf``);
    the fp8 group-offload tiers come last and only with ``allow_lossy``. Estimates:
    :func:`worldstereo.estimate_peak_vram_gb` (release sizes unless ``counts`` is given).

    Args:
        gpu_memory_gb: memory of the accelerator in GB (1e9 bytes), e.g. 24.
        variant: ``"worldstereo-camera"``, ``"worldstereo-memory"`` or ``"worldstereo-memory-dmd"``.
        height, width, num_frames, num_references: generation size.
        allow_lossy: also consider fp8 tiers.
        counts: :class:`ParameterCounts` of the actual model.

    Raises:
        ValueError: bad arguments, or no tier fits (the message gives the smallest requirement).
    """
    if isinstance(gpu_memory_gb, bool) or not isinstance(gpu_memory_gb, (int, float)) or not gpu_memory_gb > 0:
        raise ValueError(f"gpu_memory_gb: expected a positive number of GB, got {gpu_memory_gb!r}")
    c = counts if counts is not None else release_parameter_counts(variant)
    estimates = {name: estimate_peak_vram_gb(name, variant, height, width, num_frames, num_references, c)
                 for name in _SUGGESTION_ORDER if allow_lossy or not get_memory_tier(name).lossy}
    for name, need in estimates.items():
        if need <= gpu_memory_gb:
            return name
    best = min(estimates, key=estimates.__getitem__)
    raise ValueError(f"gpu_memory_gb: no memory tier fits {gpu_memory_gb} GB for {variant} at "
                     f"{height}x{width}x{num_frames}; the smallest, {best!r}, needs about {estimates[best]:.1f} GB "
                     f"(use a smaller resolution or fewer frames)")
