"""The conformance checkers must work on ANY directory of the conformance layout.

A HOLDOUT set has the DEV layout with other seeds and tiny dimensions. Here synthetic case
directories with other sizes (3 heads x 8 dims, 2 layers, 1 ControlNet layer, B = 2, F = 5,
32 x 48 pixels, R = 3, 2 or 3 sampling steps, other DMD settings, other trajectories / image sizes /
banks) are written by ``_synth`` with expected values from our own implementation (and, for the
sampling loops and schedules, from independent transcriptions of the README formulas); every
checker must pass on them, and must FAIL once an expected value is perturbed or reshaped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from worldstereo.conformance import run_case, run_conformance
from worldstereo.conformance.runner import checker_for

from . import _synth as S


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster on the shared CI cores (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def synth_root(_one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conformance_other")
    cam = S.make_transformer_case(root / "transformer_camera", memory=False, seed=1)
    mem = S.make_transformer_case(root / "transformer_memory", memory=True, seed=2)
    S.make_transformer_case(root / "transformer_memory_update_ref", memory=True, update_ref=True,
                            heads=2, head_dim=12, layers=3, cn_layers=2, B=1, F=4, H=48, W=32, R=2, seed=3)
    S.make_sampling_case(root / "sampling_unipc", root / "transformer_memory", mem, kind="unipc", n_steps=2)
    S.make_sampling_case(root / "sampling_unipc_camera", root / "transformer_camera", cam, kind="unipc",
                         B=1, F=3, H=48, W=32, n_steps=3, guidance_scale=3.0)
    S.make_sampling_case(root / "sampling_dmd", root / "transformer_memory", mem, kind="dmd",
                         dmd={"start": 200.0, "end": 1000.0, "shift": 3.0, "steps": 3})
    S.make_schedulers_case(root / "schedulers")
    S.make_camera_embedding_case(root / "camera_embedding")
    S.make_point_lifting_case(root / "point_lifting")
    S.make_misc_case(root / "misc")
    S.make_retrieval_case(root / "retrieval")
    # end-to-end cases: other sizes, frame / reference counts, seeds, steps, guidance and DMD schedule
    S.make_pipeline_case(root / "pipeline_camera", "worldstereo-camera", H=32, W=48, F=4, n_steps=3,
                         guidance_scale=3.0, seed=41)
    S.make_pipeline_case(root / "pipeline_memory", "worldstereo-memory", H=48, W=32, F=5, R=3, n_steps=2,
                         guidance_scale=2.5, seed=42)
    S.make_pipeline_case(root / "pipeline_dmd", "worldstereo-memory-dmd", H=32, W=32, F=4, R=2, seed=43,
                         dmd={"start": 200.0, "end": 1000.0, "shift": 3.0, "steps": 3})
    return root


def _failures(results: list) -> list[str]:
    return [f"{r.name}: err={r.max_abs_err:.3e} tol={r.tolerance:.1e} {r.detail}" for r in results if not r.passed]


#: result names every checker must produce on the synthetic cases (a checker that silently skips
#: a quantity would otherwise pass)
_REQUIRED = {
    "transformer_camera": {"sample", "sample_timestep_int", "intermediates/controlnet_state_0",
                           "intermediates/block_1_out", "intermediates/rope_cos"},
    "transformer_memory": {"sample", "sample_timestep_int", "intermediates/block_1_ref_out",
                           "intermediates/ref_rope_cos", "intermediates/camera_token_ref"},
    "transformer_memory_update_ref": {"sample", "intermediates/block_2_ref_in", "intermediates/controlnet_state_1"},
    "sampling_unipc": {"n_transformer_calls", "sigmas", "timesteps", "latents_step_1", "velocity_cond_1",
                       "velocity_uncond_1", "latents_final", "guidance_passes_text"},
    "sampling_unipc_camera": {"velocity_uncond_2", "latents_step_2", "latents_final"},
    "sampling_dmd": {"scheduler_timesteps", "timesteps", "velocity_2", "latents_step_2", "latents_final"},
    "schedulers": {"dmd0/sample_after_2", "dmd1/sample_after_4", "unipc0/sigmas", "unipc0/sample_after_4",
                   "unipc1/timesteps"},
    "camera_embedding": {"trajA_plucker", "trajB_plucker_unnormalized", "trajC_norm_isw2c_true_scale2",
                         "quat_expected", "camera_qt_ref", "singleview_camera_qt", "unified_trajC_ref_w2c_normalized"},
    "point_lifting": {"valid/points", "invalid/keep_mask", "invalid/depth_after_contraction", "valid/n_points"},
    "misc": {"sample_align_nframe(4, 7)"},
    "pipeline_camera": {"prompt_embeds", "negative_prompt_embeds", "probe_prompt_embeds", "image_embeds", "condition",
                        "render_latent", "render_mask", "camera_embedding", "timesteps", "latents_step_2",
                        "velocity_cond_2", "velocity_uncond_2", "latents_final", "decoded_video", "output_video",
                        "transformer_calls", "constant/render_latent"},
    "pipeline_memory": {"reference_latent", "camera_qt", "camera_qt_ref", "ref_index", "latents_step_1",
                        "velocity_uncond_1", "latents_final", "output_video", "constant/reference_latent"},
    "pipeline_dmd": {"reference_latent", "camera_qt_ref", "timesteps", "velocity_2", "latents_step_2",
                     "latents_final", "decoded_video", "transformer_calls"},
    "retrieval": {"frame_overlap_raw", "frame_best_index", "shortcut_example/best_score", "plain/ref_index",
                  "selector/selector/selected_positions", "shortcut_aerial/ref_w2cs",
                  "selector_standalone/indices", "selector_standalone/camera_features"},
}


@pytest.mark.parametrize("case", sorted(_REQUIRED))
def test_checker_passes_on_other_dimensions(synth_root: Path, case: str) -> None:
    results = run_case(synth_root / case)
    assert not _failures(results), f"{case}:\n" + "\n".join(_failures(results))
    names = {r.name for r in results}
    missing = _REQUIRED[case] - names
    assert not missing, f"{case}: checker did not compare {sorted(missing)}"


def test_synthetic_dimensions_differ_from_dev(synth_root: Path) -> None:
    """Guard: the synthetic cases really use other sizes than the DEV set."""
    inp = load_file(str(synth_root / "transformer_memory" / "inputs.safetensors"))
    assert tuple(inp["hidden_states"].shape) == (2, 36, 5, 4, 6)
    assert tuple(inp["reference_latent"].shape) == (2, 36, 3, 4, 6)
    assert tuple(inp["render_mask"].shape) == (2, 1, 5, 32, 48)
    cfg = json.loads((synth_root / "transformer_memory" / "config.json").read_text())
    assert (cfg["transformer"]["num_attention_heads"], cfg["transformer"]["attention_head_dim"],
            cfg["transformer"]["num_layers"], cfg["controlnet_cfg"]["num_layers"]) == (3, 8, 2, 1)
    exp = load_file(str(synth_root / "sampling_unipc" / "expected.safetensors"))
    assert tuple(exp["timesteps"].shape) == (2, 2)
    pipe = load_file(str(synth_root / "pipeline_memory" / "inputs.safetensors"))
    assert tuple(pipe["render_video"].shape) == (1, 3, 5, 48, 32) and tuple(pipe["reference_video"].shape)[2] == 3
    meta = json.loads((synth_root / "pipeline_camera" / "meta.json").read_text())
    assert (meta["num_inference_steps"], meta["guidance_scale"], meta["seed"]) == (3, 3.0, 41)


def test_run_conformance_discovers_every_case(synth_root: Path) -> None:
    """Every synthetic case is recognised; the model-free ones also run through ``run_conformance``
    (the model cases are run one by one above, keeping this file fast)."""
    found = {p.name for p in synth_root.iterdir() if p.is_dir() and checker_for(p) is not None}
    assert found == set(_REQUIRED)
    cheap = ["camera_embedding", "misc", "point_lifting", "retrieval", "schedulers"]
    out = run_conformance(synth_root, cases=cheap)
    assert set(out) == set(cheap)
    bad = {case: _failures(res) for case, res in out.items() if _failures(res)}
    assert not bad, bad


# ------------------------------------------------------------------------------ corrupted copies
def _copy(synth_root: Path, case: str, tag: str) -> Path:
    """Copy ``case`` to a sibling ``<case>_<tag>`` (recognised by the runner's prefix rule; relative
    model paths of the sampling cases still resolve)."""
    dst = synth_root / f"{case}_{tag}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(synth_root / case, dst)
    return dst


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set(d: dict, keys: list, value) -> None:  # noqa: ANN001
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


_CORRUPTIONS = [
    # (case, file, kind, target, result name that must fail)
    ("transformer_camera", "expected.safetensors", "perturb", "sample", "sample"),
    ("transformer_camera", "intermediates.safetensors", "reshape", "mask_cam_embed", "intermediates/mask_cam_embed"),
    ("transformer_memory", "intermediates.safetensors", "perturb", "block_1_ref_in", "intermediates/block_1_ref_in"),
    ("transformer_memory_update_ref", "config.json", "json", (["controlnet_cfg", "update_ref"], False), "sample"),
    ("sampling_unipc", "meta.json", "json", (["guidance_scale"], 5.0), "latents_final"),
    ("sampling_dmd", "meta.json", "json", (["gen_shift"], 5.0), "scheduler_timesteps"),
    ("schedulers", "data.safetensors", "perturb", "dmd1_sample_after_2", "dmd1/sample_after_2"),
    ("schedulers", "data.safetensors", "perturb", "unipc0_sample_after_3", "unipc0/sample_after_3"),
    ("camera_embedding", "data.safetensors", "perturb", "trajA_plucker", "trajA_plucker"),
    ("camera_embedding", "data.safetensors", "reshape", "camera_qt_ref", "camera_qt_ref"),
    ("camera_embedding", "data.safetensors", "perturb", "unified_trajC_target_w2c_normalized",
     "unified_trajC_target_w2c_normalized"),
    ("point_lifting", "data.safetensors", "perturb", "invalid_points", "invalid/points"),
    ("point_lifting", "data.safetensors", "reshape", "valid_keep_mask", "valid/keep_mask"),
    ("misc", "data.json", "json", (["trajectory_subsample_linspace", 0, "indices", 1], 5),
     "trajectory_subsample_linspace[0] (17,5)"),
    ("retrieval", "data.safetensors", "perturb", "frame_overlap_raw", "frame_overlap_raw"),
    ("retrieval", "meta.json", "json", (["scenarios", "plain", "max_reference"], 1), "plain/ref_index"),
    ("pipeline_camera", "meta.json", "json", (["prompt"], "a garden path at dusk"), "prompt_embeds"),
    ("pipeline_camera", "expected.safetensors", "perturb", "decoded_video", "decoded_video"),
    ("pipeline_memory", "meta.json", "json", (["guidance_scale"], 5.0), "latents_final"),
    ("pipeline_memory", "inputs.safetensors", "perturb", "latents_init", "latents_step_0"),
    ("pipeline_memory", "expected.safetensors", "perturb", "reference_latent", "reference_latent"),
    ("pipeline_dmd", "config.json", "json", (["gen_shift"], 5.0), "timesteps"),
    ("pipeline_dmd", "inputs.safetensors", "perturb", "ref_w2c", "camera_qt_ref"),
]


@pytest.mark.parametrize("case,fname,kind,target,must_fail", _CORRUPTIONS,
                         ids=[f"{c[0]}-{c[2]}-{c[4]}" for c in _CORRUPTIONS])
def test_checker_fails_on_corrupted_copy(synth_root: Path, case: str, fname: str, kind: str, target,  # noqa: ANN001
                                         must_fail: str) -> None:
    dst = _copy(synth_root, case, "corrupt")
    try:
        path = dst / fname
        if kind == "perturb":
            S.perturb_tensor(path, target, 1e-2)
        elif kind == "reshape":
            S.reshape_tensor(path, target)
        else:
            keys, value = target
            _edit_json(path, lambda d: _set(d, keys, value))
        results = run_case(dst)
        failed = {r.name for r in results if not r.passed}
        assert must_fail in failed, f"{case}: corruption of {fname}:{target} not detected; failed = {sorted(failed)}"
    finally:
        shutil.rmtree(dst)


def test_transformer_checker_rejects_incomplete_checkpoint(synth_root: Path) -> None:
    """Strict loading: a state dict with a missing key makes the case fail instead of passing."""
    dst = _copy(synth_root, "transformer_memory", "missing_key")
    try:
        sd = load_file(str(dst / "model.safetensors"))
        sd.pop(sorted(k for k in sd if k.startswith("camera_embedding."))[0])
        S.save_tensors(dst / "model.safetensors", sd)
        results = run_case(dst)
        assert _failures(results)
    finally:
        shutil.rmtree(dst)


def test_intermediate_names_scale_with_layer_counts(synth_root: Path) -> None:
    """The checker compared one block_i entry per backbone layer and one controlnet_state per
    ControlNet layer of THIS config (2 and 1 here, 3 and 2 for update_ref)."""
    for case, n_layers, n_cn in (("transformer_memory", 2, 1), ("transformer_memory_update_ref", 3, 2)):
        names = {r.name for r in run_case(synth_root / case)}
        assert {f"intermediates/block_{i}_out" for i in range(n_layers)} <= names
        assert f"intermediates/block_{n_layers}_out" not in names
        assert {f"intermediates/controlnet_state_{i}" for i in range(n_cn)} <= names
        assert f"intermediates/controlnet_state_{n_cn}" not in names
    ref = load_file(str(synth_root / "transformer_memory_update_ref" / "inputs.safetensors"))
    assert ref["hidden_states"].dtype == torch.float32 and ref["ref_index"].dtype == torch.int64
