"""Builders of synthetic conformance case directories with dimensions that differ from the DEV set.

Every case is written in the layout of ``/work/shared/conformance`` (same file names, tensor names,
dtypes and meta keys). Expected values come from our own implementation (self-consistency) or, where
cheap, from an independent computation (diffusers' UniPC scheduler, SciPy quaternions, a hand-written
sampling loop). The point is to prove the checkers read every size from the files.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from worldstereo.camera.embedding import (
    camera_center_normalization,
    camera_qt_tokens,
    plucker_embedding,
    unified_camera_normalization,
)
from worldstereo.models.conditioning import prepare_reference_latent
from worldstereo.models.transformer import WorldStereoTransformer
from worldstereo.models.worldstereo import WorldStereo
from worldstereo.testing import tiny_model

TEXT_TOKENS = 512
IMAGE_TOKENS = 257

UNIPC_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "solver_order": 2, "prediction_type": "flow_prediction", "thresholding": False,
    "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "predict_x0": True, "solver_type": "bh2",
    "lower_order_final": True, "disable_corrector": [], "solver_p": None, "use_karras_sigmas": False,
    "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_flow_sigmas": True, "flow_shift": 3.0,
    "timestep_spacing": "linspace", "steps_offset": 0, "final_sigmas_type": "zero",
    "rescale_betas_zero_snr": False,
}


def reference_unipc(n: int) -> Any:
    """diffusers UniPC solver on the reference (diffusers 0.36) flow grid, transcribed from the README:
    s = 1 - linspace(1, 1/1000, n+1); s = flip(3s / (1 + 2s))[:-1]; t = int64(1000 s); sigmas = [s, 0]."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(**UNIPC_CONFIG)
    sched.set_timesteps(n)  # resets the solver state; the grid is replaced below
    s = 1.0 - np.linspace(1.0, 1.0 / 1000, n + 1)
    s = np.flip(3.0 * s / (1.0 + 2.0 * s))[:-1].copy()
    sched.timesteps = torch.from_numpy((s * 1000).astype(np.int64))
    sched.sigmas = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
    sched.num_inference_steps = n
    return sched


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


# ------------------------------------------------------------------------------------------ cameras
def look_at_w2c(center: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera 4x4 (float64) of a camera at ``center`` looking at ``target`` (y down)."""
    z = target - center
    z = z / z.norm()
    up = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    x = torch.linalg.cross(up, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])  # rows = camera axes in world coordinates
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ center
    return w2c


def orbit_trajectory(n: int, gen: torch.Generator, radius: float = 3.0, arc_deg: float = 60.0,
                     jitter: float = 0.05) -> torch.Tensor:
    """``[n, 4, 4]`` float32 w2c of an orbit around the origin with a little positional jitter."""
    start = float(torch.rand(1, generator=gen)) * 360.0
    poses = []
    for i in range(n):
        a = math.radians(start + arc_deg * i / max(n - 1, 1))
        c = torch.tensor([radius * math.sin(a), -0.3 * i / max(n, 1), -radius * math.cos(a)], dtype=torch.float64)
        c = c + jitter * torch.randn(3, generator=gen, dtype=torch.float64)
        poses.append(look_at_w2c(c, 0.2 * torch.randn(3, generator=gen, dtype=torch.float64)))
    return torch.stack(poses).float()


def intrinsics(n: int, H: int, W: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 3, 3]`` pixel intrinsics with a slight per-frame zoom."""
    K = torch.zeros(n, 3, 3)
    f = 0.9 * W * (1.0 + 0.02 * torch.rand(n, generator=gen))
    K[:, 0, 0], K[:, 1, 1] = f, f * 1.01
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2.0 + 0.3, H / 2.0 - 0.2, 1.0
    return K


# -------------------------------------------------------------------------------------- transformer
def transformer_config(memory: bool, heads: int, head_dim: int, layers: int, cn_layers: int,
                       update_ref: bool = False, nframe: int = 5) -> dict[str, Any]:
    """Reference-schema ``config.json`` (like the shipped ones) of a tiny model with other sizes."""
    D = heads * head_dim
    cn: dict[str, Any] = {"dim": 20, "ffn_dim": 28, "num_heads": 2, "time_embed_dim": D, "num_layers": cn_layers,
                          "conv_out_dim": D, "add_channels": 7, "mid_channels": 16, "mask_downsample": 1}
    if memory:
        cn.update({"update_ref": update_ref, "main_camera_embedding": True, "camera_embedding_dim": 7,
                   "ref_embedding": True})
    return {
        "model_type": "worldstereo-memory" if memory else "worldstereo-camera",
        "base_model": "placeholder/tiny-random-wan2.1-i2v (backbone config given under 'transformer')",
        "nframe": nframe, "freeze_backbone": True, "scale_map": None, "latent_cond_mode": "first_frame_only",
        "negative_prompt": "", "controlnet_cfg": cn,
        "transformer": {
            "patch_size": [1, 2, 2], "num_attention_heads": heads, "attention_head_dim": head_dim,
            "in_channels": 36, "out_channels": 16, "text_dim": 12, "freq_dim": 64, "ffn_dim": 2 * D,
            "num_layers": layers, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6,
            "image_dim": 10, "added_kv_proj_dim": D, "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
        },
    }


def random_model(cfg: dict[str, Any], seed: int) -> WorldStereoTransformer:
    """Model of ``cfg`` with every parameter random (including the release's zero-inits)."""
    torch.manual_seed(seed)
    model = WorldStereoTransformer.from_config(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def write_model(case_dir: Path, cfg: dict[str, Any], model: WorldStereoTransformer) -> None:
    write_json(case_dir / "config.json", cfg)
    save_tensors(case_dir / "model.safetensors", dict(model.state_dict()))


def _hidden_states(B: int, F: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(B, 16, F, h, w, generator=gen)
    return torch.cat([x, condition(B, F, h, w, gen)], dim=1)


def condition(B: int, F: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``[B, 20, F, h, w]``: frame mask (1 on frame 0) + image-condition latent."""
    mask = torch.zeros(B, 4, F, h, w)
    mask[:, :, 0] = 1.0
    lat = torch.randn(B, 16, 1, h, w, generator=gen)
    black = torch.randn(1, 16, 1, h, w, generator=gen).expand(B, 16, F - 1, h, w)
    return torch.cat([mask, torch.cat([lat, black], dim=2)], dim=1)


def model_conditions(memory: bool, B: int, F: int, H: int, W: int, R: int, gen: torch.Generator,
                     cfg: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Constant transformer keywords (render, mask, Plücker, memory inputs) and the cameras file."""
    h, w = H // 8, W // 8
    tw2c = torch.stack([orbit_trajectory(F, gen) for _ in range(B)])
    tK = torch.stack([intrinsics(F, H, W, gen) for _ in range(B)])
    mask = (torch.rand(B, 1, F, H, W, generator=gen) > 0.6).float()
    mask[:, :, 0] = 0.0
    kw = {
        "render_latent": torch.randn(B, 16, F, h, w, generator=gen),
        "render_mask": mask,
        "camera_embedding": torch.cat([plucker_embedding(tK[b], tw2c[b], H, W) for b in range(B)]),
    }
    cams = {"target_K": tK, "target_w2c": tw2c}
    if memory:
        rw2c = torch.stack([orbit_trajectory(R, gen, radius=3.5) for _ in range(B)])
        qts = [camera_qt_tokens(tw2c[b], rw2c[b]) for b in range(B)]
        z = torch.randn(B, 16, R, h, w, generator=gen)
        kw.update({
            "reference_latent": torch.cat([z, torch.ones(B, 4, R, h, w), z], dim=1),
            "ref_index": torch.randint(0, F - 1, (R,), generator=gen, dtype=torch.int64),
            "camera_qt": torch.cat([q[0] for q in qts]),
            "camera_qt_ref": torch.cat([q[1] for q in qts]),
        })
        cams["reference_w2c"] = rw2c
    tdim, idim = cfg["transformer"]["text_dim"], cfg["transformer"]["image_dim"]
    kw["encoder_hidden_states_image"] = torch.randn(B, IMAGE_TOKENS, idim, generator=gen)
    kw["_text"] = text_embeds(B, tdim, gen)
    return kw, cams


def text_embeds(B: int, text_dim: int, gen: torch.Generator, length: int = 7) -> torch.Tensor:
    e = torch.randn(B, TEXT_TOKENS, text_dim, generator=gen)
    e[:, length:] = 0.0
    return e


def make_transformer_case(case_dir: Path, *, memory: bool, heads: int = 3, head_dim: int = 8, layers: int = 2,
                          cn_layers: int = 1, B: int = 2, F: int = 5, H: int = 32, W: int = 48, R: int = 3,
                          update_ref: bool = False, seed: int = 7) -> WorldStereoTransformer:
    """Write a ``transformer_camera`` / ``transformer_memory*`` case (all six files) into ``case_dir``."""
    gen = torch.Generator().manual_seed(seed)
    cfg = transformer_config(memory, heads, head_dim, layers, cn_layers, update_ref, nframe=F)
    model = random_model(cfg, seed)
    write_model(case_dir, cfg, model)
    kw, cams = model_conditions(memory, B, F, H, W, R, gen, cfg)
    inputs = {"hidden_states": _hidden_states(B, F, H // 8, W // 8, gen),
              "encoder_hidden_states": kw.pop("_text"), **kw,
              "timestep": torch.tensor([937.5, 412.25, 700.75][:B], dtype=torch.float32),
              "timestep_int": torch.tensor([999, 500, 3][:B], dtype=torch.int64)}
    fwd = {k: v for k, v in inputs.items() if k not in ("timestep", "timestep_int")}
    inter: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        sample = model(timestep=inputs["timestep"], return_dict=False, intermediates=inter, **fwd)[0]
        sample_int = model(timestep=inputs["timestep_int"], return_dict=False, **fwd)[0]
    save_tensors(case_dir / "inputs.safetensors", inputs)
    save_tensors(case_dir / "expected.safetensors", {"sample": sample, "sample_timestep_int": sample_int})
    save_tensors(case_dir / "intermediates.safetensors", {k: v.float() for k, v in inter.items()})
    save_tensors(case_dir / "cameras.safetensors", cams)
    return model


# ---------------------------------------------------------------------------------------- sampling
def dmd_timesteps_reference(start: float, end: float, shift: float, steps: int) -> torch.Tensor:
    """Independent transcription of the README formula (float32)."""
    t = torch.linspace(start, end, steps, dtype=torch.float32).flip(0)
    u = t / end
    u = shift * u / (1 + (shift - 1) * u)
    return (u * end).to(torch.float32)


def make_sampling_case(case_dir: Path, model_case: Path, model: WorldStereoTransformer, *, kind: str,
                       B: int = 2, F: int = 5, H: int = 32, W: int = 48, R: int = 3, n_steps: int = 2,
                       dmd: dict[str, float] | None = None, guidance_scale: float = 4.0, seed: int = 11) -> None:
    """Write a ``sampling_dmd`` (kind='dmd') or ``sampling_unipc`` (kind='unipc') case whose model is
    ``model_case`` (referenced by relative paths, as in the shipped meta.json). The expected loop is
    evaluated by hand here (diffusers' UniPC, README Euler formula), not by ``worldstereo.sampling``."""
    gen = torch.Generator().manual_seed(seed)
    cfg = json.loads((model_case / "config.json").read_text())
    memory = cfg["model_type"].startswith("worldstereo-memory")
    h, w = H // 8, W // 8
    kw, cams = model_conditions(memory, B, F, H, W, R, gen, cfg)
    prompt = kw.pop("_text")
    negative = text_embeds(B, cfg["transformer"]["text_dim"], gen, length=3)
    cond = condition(B, F, h, w, gen)
    latents_init = torch.randn(B, 16, F, h, w, generator=gen)
    image = kw.pop("encoder_hidden_states_image")
    if not memory:
        kw["extrinsics"] = cams["target_w2c"][0]
        kw["intrinsics"] = cams["target_K"][0]
    inputs = {"latents_init": latents_init, "condition": cond, "prompt_embeds": prompt, "image_embeds": image, **kw}

    def velocity(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(hidden_states=torch.cat([x, cond], dim=1), timestep=t, encoder_hidden_states=text,
                         encoder_hidden_states_image=image, return_dict=False, **kw)[0]

    expected: dict[str, torch.Tensor] = {}
    x = latents_init.clone()
    rel = Path("..") / model_case.name
    meta: dict[str, Any] = {"model_weights": str(rel / "model.safetensors"), "model_config": str(rel / "config.json")}
    kwargs_list = sorted(["attention_kwargs", "encoder_hidden_states", "encoder_hidden_states_image",
                          "hidden_states", "return_dict", "timestep", *kw])
    if kind == "dmd":
        assert dmd is not None
        ts = dmd_timesteps_reference(dmd["start"], dmd["end"], dmd["shift"], int(dmd["steps"]))
        steps = []
        for i, t in enumerate(ts):
            expected[f"latents_step_{i}"] = x.clone()
            tb = t.repeat(B)
            steps.append(tb)
            v = velocity(x, tb, prompt)
            expected[f"velocity_{i}"] = v
            sig, sig_next = t / dmd["end"], (ts[i + 1] / dmd["end"] if i + 1 < len(ts) else torch.tensor(0.0))
            x = x + (sig_next - sig) * v
        expected["timesteps"] = torch.stack(steps)
        meta.update({"scheduler": "FlowGeneratorScheduler", "dmd_start_steps": dmd["start"],
                     "dmd_end_steps": dmd["end"], "gen_shift": dmd["shift"], "dmd_steps": int(dmd["steps"]),
                     "mode": "test", "guidance": "none (single pass)", "timestep_dtype": "float32",
                     "timesteps": [float(t) for t in ts], "transformer_call_kwargs": kwargs_list + [
                         "point_map_latent", "point_map_ref_latent"], "n_transformer_calls": len(ts)})
    else:
        inputs["negative_prompt_embeds"] = negative
        sched = reference_unipc(n_steps)  # independent of worldstereo.sampling
        steps = []
        for i, t in enumerate(sched.timesteps):
            expected[f"latents_step_{i}"] = x.clone()
            tb = t.to(torch.int64).repeat(B)
            steps.append(tb)
            vc, vu = velocity(x, tb, prompt), velocity(x, tb, negative)
            expected[f"velocity_cond_{i}"], expected[f"velocity_uncond_{i}"] = vc, vu
            x = sched.step(vu + guidance_scale * (vc - vu), t, x).prev_sample
        expected["timesteps"] = torch.stack(steps)
        expected["sigmas"] = sched.sigmas.to(torch.float32)
        meta.update({"scheduler": "UniPCMultistepScheduler", "num_inference_steps": n_steps,
                     "guidance_scale": guidance_scale, "timestep_dtype": "int64",
                     "timesteps": [float(t) for t in sched.timesteps], "transformer_call_kwargs": kwargs_list,
                     "n_transformer_calls": 2 * n_steps})
    expected["latents_final"] = x
    write_json(case_dir / "meta.json", meta)
    save_tensors(case_dir / "inputs.safetensors", inputs)
    save_tensors(case_dir / "expected.safetensors", expected)


# --------------------------------------------------------------------------------------- schedulers
def make_schedulers_case(case_dir: Path, seed: int = 3) -> None:
    """DMD settings and UniPC runs other than the DEV ones; sample shape [2, 16, 3, 2, 4]."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 16, 3, 2, 4)
    data: dict[str, torch.Tensor] = {}
    dmd_meta = []
    for k, (start, end, shift, steps) in enumerate([(100, 1000, 2.0, 3), (300, 1000, 7.0, 5)]):
        ts = dmd_timesteps_reference(start, end, shift, steps)
        x = torch.randn(shape, generator=gen)
        data[f"dmd{k}_sample_init"], data[f"dmd{k}_timesteps"] = x.clone(), ts
        for i in range(steps):
            v = torch.randn(shape, generator=gen)
            nxt = ts[i + 1] / end if i + 1 < steps else torch.tensor(0.0)
            x = x + (nxt - ts[i] / end) * v
            data[f"dmd{k}_velocity_{i}"], data[f"dmd{k}_sample_after_{i}"] = v, x.clone()
        dmd_meta.append({"index": k, "start_timesteps": start, "num_train_timesteps": end, "shift": shift,
                         "dmd_steps": steps, "timesteps": [float(t) for t in ts]})
    runs = []
    for k, n in enumerate([5, 2]):
        sched = reference_unipc(n)
        x = torch.randn(shape, generator=gen)
        data[f"unipc{k}_sample_init"] = x.clone()
        data[f"unipc{k}_timesteps"] = sched.timesteps.clone()
        data[f"unipc{k}_sigmas"] = sched.sigmas.to(torch.float32).clone()
        for i, t in enumerate(sched.timesteps):
            v = torch.randn(shape, generator=gen)
            x = sched.step(v, t, x).prev_sample
            data[f"unipc{k}_model_output_{i}"], data[f"unipc{k}_sample_after_{i}"] = v, x.clone()
        runs.append({"index": k, "num_inference_steps": n, "timesteps": [int(t) for t in sched.timesteps]})
    write_json(case_dir / "meta.json", {"dmd": dmd_meta, "unipc": {"config": UNIPC_CONFIG, "runs": runs}})
    save_tensors(case_dir / "data.safetensors", data)


# --------------------------------------------------------------------------------- camera_embedding
def make_camera_embedding_case(case_dir: Path, H: int = 40, W: int = 56, seed: int = 5) -> None:
    """Trajectories with 6 / 3 / 25 frames (outlier at 12), 2 references, 10 random rotations."""
    from scipy.spatial.transform import Rotation

    gen = torch.Generator().manual_seed(seed)
    data: dict[str, torch.Tensor] = {}
    trajA = orbit_trajectory(6, gen)
    centre = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)
    trajB = torch.stack([look_at_w2c(centre, centre + torch.tensor([math.sin(a), 0.1 * a, math.cos(a)],
                                                                    dtype=torch.float64))
                         for a in (0.0, 0.3, 0.7)]).float()
    trajC = orbit_trajectory(25, gen, arc_deg=120.0)
    c2w = torch.linalg.inv(trajC[12].double())
    c2w[:3, 3] *= 200.0
    trajC[12] = torch.linalg.inv(c2w).float()
    for name, traj in (("trajA", trajA), ("trajB", trajB), ("trajC", trajC)):
        data[f"{name}_w2c"] = traj
        variants = [(False, 2.0), (True, 2.0)] + ([] if name == "trajC" else [(False, 1.0)])
        for isw2c, scale in variants:
            data[f"{name}_norm_isw2c_{str(isw2c).lower()}_scale{scale:g}"] = camera_center_normalization(
                traj, traj.shape[0], camera_scale=scale, is_w2c=isw2c)
        if name != "trajC":
            K = intrinsics(traj.shape[0], H, W, gen)
            data[f"{name}_K"] = K
            data[f"{name}_plucker"] = plucker_embedding(K, traj, H, W, normalize=True)
            data[f"{name}_plucker_unnormalized"] = plucker_embedding(K, traj, H, W, normalize=False)
    rots = Rotation.random(10, random_state=seed).as_matrix().astype(np.float32)
    rots[0] = np.diag([1.0, -1.0, -1.0])  # 180-degree rotations exercise the other branches
    rots[1] = np.diag([-1.0, 1.0, -1.0])
    q = Rotation.from_matrix(rots.astype(np.float64)).as_quat()  # x, y, z, w
    q = np.concatenate([q[:, 3:], q[:, :3]], axis=1)
    q = np.where(q[:, :1] < 0, -q, q)
    data["quat_rotations"] = torch.from_numpy(rots)
    data["quat_expected"] = torch.from_numpy(q.astype(np.float32))
    ref = trajA[[1, 4]].clone()
    data["unified_target_w2c"], data["unified_ref_w2c"] = trajA, ref
    tgt_n, ref_n = unified_camera_normalization(trajA, ref, 2.0)
    data["unified_target_w2c_normalized"], data["unified_ref_w2c_normalized"] = tgt_n, ref_n
    data["camera_qt"], data["camera_qt_ref"] = camera_qt_tokens(trajA, ref)
    data["singleview_camera_qt"], data["singleview_camera_qt_ref"] = camera_qt_tokens(trajA, trajA[0:1])
    cref = trajC[[12, 24]].clone()
    data["unified_trajC_ref_w2c"] = cref
    t, r = unified_camera_normalization(trajC, cref, 2.0)
    data["unified_trajC_target_w2c_normalized"], data["unified_trajC_ref_w2c_normalized"] = t, r
    write_json(case_dir / "meta.json", {"H": H, "W": W, "trajA_frames": 6, "trajB_frames": 3, "trajC_frames": 25,
                                        "trajC_outlier_index": 12, "unified_ref_source_frames": [1, 4]})
    save_tensors(case_dir / "data.safetensors", data)


# ------------------------------------------------------------------------------------ point_lifting
def make_point_lifting_case(case_dir: Path, H: int = 30, W: int = 44, seed: int = 9) -> None:
    """'valid' and 'invalid' scenes at H x W; expected from our own lifting (self-consistency)."""
    from worldstereo.geometry.lifting import get_points3d_and_colors_detailed

    gen = torch.Generator().manual_seed(seed)
    K = intrinsics(3, H, W, gen)
    w2c = orbit_trajectory(3, gen)
    image = torch.rand(1, 3, H, W, generator=gen) * 2 - 1
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    data: dict[str, torch.Tensor] = {"K": K, "w2c": w2c, "image": image}
    meta: dict[str, Any] = {"H": H, "W": W, "sobel_threshold": 0.35, "contract": 8.0,
                            "all_zero_depth_returns": "(None, None)"}
    for scene in ("valid", "invalid"):
        depth = 4.0 + 0.03 * xx + 0.2 * torch.exp(-((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / 40.0)
        depth[H // 4: H // 2, W // 4: W // 2] -= 1.5  # box with sharp edges
        depth[: H // 6] = 200.0  # far 'sky', contracted
        depth = depth + 0.01 * torch.rand(H, W, generator=gen)
        mask = torch.zeros(H, W, dtype=torch.uint8)
        if scene == "invalid":
            mask[H - H // 4:, : W // 3] = 1
            depth[mask.bool()] = 0.0
        depth = depth.reshape(1, 1, H, W)
        res = get_points3d_and_colors_detailed(K, w2c, depth.clone(), image, mask.bool() if mask.any() else None,
                                               0.35, 8.0)
        assert res is not None and res.points is not None
        data.update({f"{scene}_depth": depth, f"{scene}_mask": mask, f"{scene}_points": res.points,
                     f"{scene}_colors": res.colors,
                     f"{scene}_depth_after_contraction": res.depth.reshape(1, 1, H, W),
                     f"{scene}_edge_mask": res.edge_mask.to(torch.uint8),
                     f"{scene}_keep_mask": res.keep_mask.to(torch.uint8)})
        meta[scene] = {"n_points": int(res.points.shape[0]), "n_pixels": H * W}
    write_json(case_dir / "meta.json", meta)
    save_tensors(case_dir / "data.safetensors", data)


# --------------------------------------------------------------------------------------------- misc
def make_misc_case(case_dir: Path) -> None:
    """data.json with other arguments; linspace indices computed independently with numpy."""
    from worldstereo.camera.keyframes import sample_align_nframe

    data: dict[str, Any] = {
        "assign_scale": [{"h": 300, "w": 300, "result_hw": [608, 608]},
                         {"h": 100, "w": 400, "scale_map": [[64, 128], [96, 96]], "result_hw": [64, 128]}],
        "sample_align_nframe": [{"N": N, "n": n, "indices": sample_align_nframe(N, n)}
                                for N, n in ((9, 3), (13, 5), (6, 5))],
        "sample_align_nframe(4, 7)": "ValueError",
        "trajectory_subsample_linspace": [{"n": n, "nframe": k,
                                           "indices": np.linspace(0, n - 1, k).astype(int).tolist()}
                                          for n, k in ((17, 5), (50, 7), (3, 3))],
    }
    write_json(case_dir / "data.json", data)


# ---------------------------------------------------------------------------------------- retrieval
def make_retrieval_case(case_dir: Path, seed: int = 21) -> None:
    """Bank of 15 named cameras, 13-pose target subsampled to nframe 4 (every 4th), image 320 x 200."""
    from worldstereo.memory.retrieval import CameraSelector, find_closest_camera, fov_overlap_scores, retrieve

    gen = torch.Generator().manual_seed(seed)
    W, H, nframe = 320, 200, 4
    target = orbit_trajectory(13, gen, arc_deg=90.0)
    tK = intrinsics(13, H, W, gen)
    frames = (3, 6, 9, 12, 15, 18)  # enough entries for the shortcut candidates [3::2]
    names = [f"scene/pano_bank/{i:04d}" for i in range(3)] + [f"view1/traj2/{i:04d}" for i in frames] + \
            [f"wonder0/traj0/{i:04d}" for i in frames]
    n_bank = len(names)
    bank = orbit_trajectory(n_bank, gen, arc_deg=150.0, jitter=0.3)
    bK = intrinsics(n_bank, H, W, gen)
    images = (torch.rand(n_bank, 12, 20, 3, generator=gen) * 255).to(torch.uint8).numpy()
    feats = torch.randn(n_bank, 16, generator=gen).numpy()
    selector = CameraSelector()
    data: dict[str, Any] = {"bank_w2c": bank, "bank_K": bK, "bank_images": torch.from_numpy(images),
                            "bank_features": torch.from_numpy(feats), "target_w2c_full": target,
                            "target_K_full": tK}
    plain = retrieve(target, tK, bank, bK, target_size=(W, H), nframe=nframe, max_references=len(names))
    used = plain.frame_indices
    pair = fov_overlap_scores(target[torch.tensor(used)], tK[torch.tensor(used)], bank, bK, (W, H), (W, H))
    data.update({"frame_overlap_raw": pair.overlap[1:], "frame_angle_deg": pair.angle_deg[1:],
                 "frame_best_index": torch.tensor(plain.retrieved, dtype=torch.int64),
                 "frame_best_score": torch.as_tensor(np.asarray(plain.scores), dtype=torch.float64),
                 "frame_best_angle_deg": torch.as_tensor(np.asarray(plain.angles), dtype=torch.float64)})
    scenarios: dict[str, Any] = {}
    idx, score, angle = find_closest_camera(target[used[1]], tK[used[1]], bank, bK, W, H, shortcut_index=9)
    scenarios["shortcut_example"] = {"target_frame": 1, "shortcut_index": 9, "best_index": int(idx),
                                     "best_score": float(score), "angle_deg": float(angle)}
    for sc, view, traj, maxref in (("plain", "renders", "traj_x", 8), ("selector", "renders", "traj_x", 2),
                                   ("shortcut_regular", "view1", "traj0", 8),
                                   ("shortcut_aerial", "wonder0", "traj1", 8)):
        r = retrieve(target, tK, bank, bK, target_size=(W, H), nframe=nframe, max_references=maxref,
                     bank_names=names, view_id=view, traj_id=traj, bank_images=images, bank_features=feats,
                     selector=selector)
        entry: dict[str, Any] = {"view_id": view, "traj_id": traj, "max_reference": maxref,
                                 "retrieved_bank_index": [int(i) for i in r.retrieved],
                                 "ref_index": [int(i) for i in r.ref_index],
                                 "ref_bank_index": [int(i) for i in r.ref_bank_indices],
                                 "ref_index_dict": {str(s): {str(f): {"score": float(v["score"]),
                                                                      "angle_diff": float(v["angle_diff"])}
                                                             for f, v in fr.items()}
                                                    for s, fr in r.score_dict.items()}}
        if r.selected_positions is not None:
            init = [int(i) for i in r.initial_retrieved]
            entry["selector"] = {"candidate_bank_index": init,
                                 "selected_positions": [int(i) for i in r.selected_positions],
                                 "quality_scores": [float(q) for q in selector.quality_scores(images[init])]}
        scenarios[sc] = entry
        data[f"{sc}_ref_w2cs"] = torch.as_tensor(r.ref_w2c).float()
    sel_w2c = orbit_trajectory(7, gen, arc_deg=200.0, jitter=0.5)
    sel_img = (torch.rand(7, 12, 20, 3, generator=gen) * 255).to(torch.uint8).numpy()
    sel_feat = torch.randn(7, 16, generator=gen).numpy()
    sel_idx = selector.select(sel_w2c, sel_img, 3, image_features=sel_feat)
    q = selector.quality_scores(sel_img)
    scenarios["selector_standalone"] = {"topk": 3, "indices": [int(i) for i in sel_idx],
                                        "quality_scores": [float(v) for v in q]}
    data.update({"selector_w2c": sel_w2c, "selector_images": torch.from_numpy(sel_img),
                 "selector_features": torch.from_numpy(sel_feat),
                 "selector_indices": torch.tensor([int(i) for i in sel_idx], dtype=torch.int64),
                 "selector_quality_scores": torch.as_tensor(np.asarray(q), dtype=torch.float64),
                 "selector_camera_features": torch.as_tensor(selector.camera_features(sel_w2c),
                                                             dtype=torch.float64)})
    write_json(case_dir / "meta.json", {"image_width": W, "image_height": H, "nframe": nframe,
                                        "n_target_full": 13, "n_target_used": len(used), "bank_fnames": names,
                                        "scenarios": scenarios})
    save_tensors(case_dir / "data.safetensors", {k: torch.as_tensor(v) for k, v in data.items()})


# ------------------------------------------------------------------------------------------ pipeline
PIPELINE_PROMPT = "A  garden path at dusk &amp; a   bench"
#: mojibake (a UTF-8 en dash read as cp1252) + an escaped ampersand: cleaning needs ftfy
PIPELINE_PROBE = "the bench \u00e2\u20ac\u201c red &amp;amp; car"
_COMPONENTS = ("vae", "text_encoder", "image_encoder", "image_processor", "tokenizer", "scheduler")


def _smooth_image(H: int, W: int, gen: torch.Generator) -> torch.Tensor:
    """``(3, H, W)`` uint8 image: upsampled random colours (so that resizing and CLIP see structure)."""
    coarse = torch.rand(1, 3, 4, 5, generator=gen)
    img = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[0]
    return (img * 255).round().to(torch.uint8)


def make_pipeline_case(case_dir: Path, variant: str, *, H: int, W: int, F: int, R: int = 0, n_steps: int = 2,
                       guidance_scale: float = 4.0, seed: int = 31, dmd: dict[str, float] | None = None) -> None:
    """Write a ``pipeline_*`` case (PIPELINE.md layout: the case folder is the checkpoint AND the base
    model, ``base_model`` = ``"."``) for a tiny random model of ``variant``.

    The expected tensors are computed from the model's building blocks (encoders, keyframe VAE,
    transformer) with a hand-written loop (diffusers' UniPC on the transcribed flow grid, or the DMD
    Euler formula) — NOT with ``generate_video``, whose pre-rendered path the checker exercises.
    """
    gen = torch.Generator().manual_seed(seed)
    case_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_model(variant, seed=seed % 7).save_pretrained(Path(tmp) / "m")
        for name in _COMPONENTS:
            shutil.copytree(Path(tmp) / "m" / name, case_dir / name)
        shutil.copy(Path(tmp) / "m" / "model.safetensors", case_dir / "model.safetensors")
        cfg = json.loads((Path(tmp) / "m" / "config.json").read_text())
    cfg["base_model"] = "."
    if dmd is not None:
        cfg.update(dmd_start_steps=dmd["start"], dmd_end_steps=dmd["end"], gen_shift=dmd["shift"],
                   dmd_steps=int(dmd["steps"]))
    write_json(case_dir / "config.json", cfg)
    model = WorldStereo.from_pretrained(case_dir, base_model=case_dir)
    memory = variant != "worldstereo-camera"
    distilled = variant == "worldstereo-memory-dmd"

    # ---- inputs (reference conventions: videos [1, C, F, H, W] in [-1, 1]) ----
    image_u8 = _smooth_image(H, W, gen)
    Image.fromarray(image_u8.permute(1, 2, 0).numpy()).save(case_dir / "image.png")
    image = image_u8.float() / 255.0 * 2.0 - 1.0
    w2c = orbit_trajectory(F, gen, arc_deg=30.0)
    K = intrinsics(F, H, W, gen)
    holes = (torch.rand(F, 1, H // 4, W // 4, generator=gen) < 0.4).float()
    mask = torch.nn.functional.interpolate(holes, size=(H, W), mode="nearest")
    mask[0] = 0.0
    render = torch.rand(F, 3, H, W, generator=gen) * 2.0 - 1.0
    render = torch.where(mask > 0.5, torch.full_like(render, -1.0), render)
    render[0] = image
    inputs: dict[str, torch.Tensor] = {
        "image": image[None], "image_01": (image_u8.float() / 255.0)[None], "extrinsics": w2c, "intrinsics": K,
        "render_video": render.permute(1, 0, 2, 3)[None].contiguous(),
        "render_mask": mask.permute(1, 0, 2, 3)[None].contiguous(),
        "camera_embedding": plucker_embedding(K, w2c, H, W),
        "latents_init": torch.randn(1, 16, F, H // 8, W // 8, generator=gen),
    }
    ref_index = None
    if memory:
        refs = torch.rand(R, 3, H, W, generator=gen) * 2.0 - 1.0
        ref_w2c = orbit_trajectory(R, gen, arc_deg=50.0)
        ref_index = torch.sort(torch.randperm(F - 1, generator=gen)[:R]).values.to(torch.int64)
        qt, qt_ref = camera_qt_tokens(w2c, ref_w2c)
        inputs.update(reference_video=refs.permute(1, 0, 2, 3)[None].contiguous(), ref_w2c=ref_w2c,
                      ref_index=ref_index, camera_qt=qt, camera_qt_ref=qt_ref)

    # ---- expected, from the building blocks ----
    negative = "a blurry photo"
    with torch.no_grad():
        expected: dict[str, torch.Tensor] = {
            "prompt_embeds": model.encode_prompt(PIPELINE_PROMPT),
            "probe_prompt_embeds": model.encode_prompt(PIPELINE_PROBE),
            "image_embeds": model.encode_image(Image.open(case_dir / "image.png")),
            "condition": model.prepare_image_condition(image[None], F),
            "render_latent": model.encode_video(inputs["render_video"]),
        }
        kw: dict[str, Any] = {
            "encoder_hidden_states_image": expected["image_embeds"], "render_latent": expected["render_latent"],
            "render_mask": inputs["render_mask"], "camera_embedding": inputs["camera_embedding"],
        }
        if memory:
            expected["reference_latent"] = prepare_reference_latent(model.encode_video(inputs["reference_video"]))
            kw.update(reference_latent=expected["reference_latent"], ref_index=ref_index,
                      camera_qt=inputs["camera_qt"], camera_qt_ref=inputs["camera_qt_ref"])
        use_cfg = not distilled and guidance_scale > 1.0
        if use_cfg:
            expected["negative_prompt_embeds"] = model.encode_prompt(negative)

        def velocity(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return model.transformer(hidden_states=torch.cat([x, expected["condition"]], dim=1), timestep=t,
                                     encoder_hidden_states=text, return_dict=False, **kw)[0]

        x = inputs["latents_init"].clone()
        steps = []
        if distilled:
            end = cfg["dmd_end_steps"]
            ts = dmd_timesteps_reference(cfg["dmd_start_steps"], end, cfg["gen_shift"], cfg["dmd_steps"])
            for i, t in enumerate(ts):
                expected[f"latents_step_{i}"] = x.clone()
                steps.append(t.reshape(1))
                v = velocity(x, t.reshape(1), expected["prompt_embeds"])
                expected[f"velocity_{i}"] = v
                nxt = ts[i + 1] / end if i + 1 < len(ts) else torch.tensor(0.0)
                x = x + (nxt - t / end) * v
            timesteps = [float(t) for t in ts]
        else:
            sched = reference_unipc(n_steps)  # independent of worldstereo.sampling
            for i, t in enumerate(sched.timesteps):
                expected[f"latents_step_{i}"] = x.clone()
                tb = t.to(torch.int64).reshape(1)
                steps.append(tb)
                vc = velocity(x, tb, expected["prompt_embeds"])
                expected[f"velocity_cond_{i}"] = vc
                if use_cfg:
                    vu = velocity(x, tb, expected["negative_prompt_embeds"])
                    expected[f"velocity_uncond_{i}"] = vu
                    vc = vu + guidance_scale * (vc - vu)
                x = sched.step(vc, t, x).prev_sample
            timesteps = [float(t) for t in sched.timesteps]
        expected["timesteps"] = torch.stack(steps)
        expected["latents_final"] = x
        decoded = model.decode_latents(x)
        expected["decoded_video"] = decoded
        expected["output_video"] = (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous()
    meta = {
        "case": case_dir.name, "model_type": variant, "seed": seed, "height": H, "width": W, "latent_frames": F,
        "num_frames": 4 * (F - 1) + 1, "prompt": PIPELINE_PROMPT, "probe_prompt": PIPELINE_PROBE,
        "negative_prompt": negative if not distilled else None,
        "num_inference_steps": None if distilled else n_steps, "guidance_scale": None if distilled else guidance_scale,
        "mode": "test" if distilled else None, "latent_cond_mode": "first_frame_only", "output_type": "pt",
        "timesteps": timesteps, "transformer_calls": len(steps) * (2 if use_cfg else 1),
        "ref_index": None if ref_index is None else ref_index.tolist(),
    }
    write_json(case_dir / "meta.json", meta)
    save_tensors(case_dir / "inputs.safetensors", inputs)
    save_tensors(case_dir / "expected.safetensors", expected)


# ------------------------------------------------------------------------------------------ corrupt
def perturb_tensor(path: Path, name: str, delta: float = 1e-2) -> None:
    """Add ``delta`` to one element of tensor ``name`` of the safetensors file ``path`` (in place)."""
    t = load_file(str(path))
    x = t[name].clone()
    x.view(-1)[x.numel() // 2] += delta
    t[name] = x
    save_tensors(path, t)


def reshape_tensor(path: Path, name: str) -> None:
    """Drop the last element along the last axis of tensor ``name`` (a shape change)."""
    t = load_file(str(path))
    t[name] = t[name][..., :-1].clone()
    save_tensors(path, t)
