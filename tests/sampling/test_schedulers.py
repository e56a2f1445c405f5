import json

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from worldstereo.sampling import (
    DEFAULT_UNIPC_CONFIG,
    DMDScheduler,
    dmd_timesteps,
    make_unipc_scheduler,
    reference_flow_sigmas,
)


# ------------------------------------------------------------------ DMD
@pytest.mark.parametrize(
    "start,end,steps,shift,expected",
    [
        (250, 1000, 4, 5.0, [1000.0, 937.5, 2500.0 / 3.0, 625.0]),
        (250, 1000, 4, 3.0, [1000.0, 900.0, 750.0, 500.0]),
        (250, 1000, 4, 1.0, [1000.0, 750.0, 500.0, 250.0]),
        (0, 1000, 6, 5.0, [1000.0, 1000 * 4.0 / 4.2, 1000 * 3.0 / 3.4, 1000 * 2.0 / 2.6, 1000 * 1.0 / 1.8, 0.0]),
    ],
)
def test_dmd_timesteps_match_shift_formula(start, end, steps, shift, expected):
    t = dmd_timesteps(start, end, shift, steps)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-4)
    s = DMDScheduler(start, end, shift, steps)
    torch.testing.assert_close(s.sigmas[:-1], t / end)
    assert s.sigmas[-1] == 0 and len(s.sigmas) == steps + 1


def test_dmd_euler_recovers_x0_on_linear_flow():
    # x_sigma = x0 + sigma * v with constant v: Euler is exact, the last step returns x0.
    g = torch.Generator().manual_seed(0)
    x0, v = torch.randn(2, 16, 3, 4, 6, generator=g), torch.randn(2, 16, 3, 4, 6, generator=g)
    s = DMDScheduler(250, 1000, 5.0, 4)
    x = x0 + s.sigmas[0] * v
    for i, t in enumerate(s.timesteps):
        x = s.step(v, t, x).prev_sample
        torch.testing.assert_close(x, x0 + s.sigmas[i + 1] * v, atol=1e-5, rtol=0)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(v, s.timesteps[-1], x)
    s.set_timesteps()  # resets the counter
    assert s.step(v, s.timesteps[0], x, return_dict=False)[0].shape == x.shape


def test_dmd_step_dtype_and_validation():
    s = DMDScheduler()
    x = torch.zeros(1, 4, 1, 2, 2, dtype=torch.float32)
    v = torch.ones(1, 4, 1, 2, 2, dtype=torch.bfloat16)
    out = s.step(v, s.timesteps[0], x).prev_sample
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(x, float(s.sigmas[1] - s.sigmas[0])))
    with pytest.raises(ValueError, match="model_output"):
        s.step(torch.ones(1, 4, 1, 2, 3), s.timesteps[1], x)
    with pytest.raises(ValueError, match="timestep"):
        DMDScheduler().step(v, 123.0, x)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(40)
    for kwargs, name in [({"dmd_steps": 0}, "dmd_steps"), ({"shift": 0.0}, "shift"),
                         ({"start_timesteps": 2000}, "start_timesteps"), ({"num_train_timesteps": -1}, "num_train")]:
        with pytest.raises(ValueError, match=name):
            DMDScheduler(**kwargs)


def test_dmd_config_round_trip(tmp_path):
    s = DMDScheduler(start_timesteps=100, num_train_timesteps=1000, shift=3.0, dmd_steps=3)
    path = s.save_pretrained(tmp_path / "sched")
    assert json.loads(path.read_text())["_class_name"] == "DMDScheduler"
    s2 = DMDScheduler.from_pretrained(tmp_path / "sched")
    assert s2.config == s.config
    torch.testing.assert_close(s2.timesteps, s.timesteps, rtol=0, atol=0)
    s3 = DMDScheduler.from_config({"dmd_start_steps": 100, "dmd_end_steps": 1000, "gen_shift": 3.0, "dmd_steps": 3})
    assert s3.config == s.config
    assert DMDScheduler.from_dict(s.to_dict()).config == s.config
    with pytest.raises(FileNotFoundError):
        DMDScheduler.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="config"):
        DMDScheduler.from_dict([1, 2])


# ------------------------------------------------------------------ UniPC
def test_unipc_reference_grid():
    s = make_unipc_scheduler()
    s.set_timesteps(3)
    assert s.timesteps.dtype == torch.int64
    # reference (diffusers 0.36) grid: 1 - linspace(1, 1/1000, 4) shifted by 3 and truncated
    assert s.timesteps.tolist() == [999, 856, 599]
    expected = [3 * u / (1 + 2 * u) for u in (0.999, 0.666, 0.333)]
    np.testing.assert_allclose(s.sigmas[:-1].numpy(), expected, rtol=1e-6)
    assert s.sigmas[-1] == 0
    s.set_timesteps(40)
    assert s.timesteps[:4].tolist() == [999, 991, 982, 973] and s.timesteps[-2:].tolist() == [136, 71]
    # the solver itself is diffusers' own
    assert isinstance(s, UniPCMultistepScheduler)


def test_unipc_factory_does_not_mutate_defaults_and_honours_overrides():
    before = json.dumps(DEFAULT_UNIPC_CONFIG, sort_keys=True)
    s = make_unipc_scheduler({"flow_shift": 1.0, "_class_name": "UniPCMultistepScheduler"})
    assert json.dumps(DEFAULT_UNIPC_CONFIG, sort_keys=True) == before
    assert s.config.flow_shift == 1.0 and s.config.prediction_type == "flow_prediction"
    s.set_timesteps(4)
    np.testing.assert_allclose(s.sigmas[:-1].numpy(), [0.999, 0.74925, 0.4995, 0.24975], rtol=1e-6)
    np.testing.assert_allclose(reference_flow_sigmas(4, 1000, 1.0), [0.999, 0.74925, 0.4995, 0.24975])
    with pytest.raises(TypeError, match="config"):
        make_unipc_scheduler("flow")
    with pytest.raises(ValueError, match="num_inference_steps"):
        reference_flow_sigmas(0)


def test_unipc_exact_on_linear_flow():
    # With a constant velocity the data prediction x - sigma v is exactly x0 at every step, so the
    # multistep solver (predictor + corrector) must land on x0.
    g = torch.Generator().manual_seed(1)
    x0, v = torch.randn(1, 16, 2, 4, 6, generator=g), torch.randn(1, 16, 2, 4, 6, generator=g)
    s = make_unipc_scheduler()
    s.set_timesteps(8)
    x = x0 + s.sigmas[0] * v
    for t in s.timesteps:
        x = s.step(v, t, x).prev_sample
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key, value, exc, words", [
    ("num_train_timesteps", 10**12, ValueError, "scheduler.num_train_timesteps: expected an integer in [1, 100000]"),
    ("num_train_timesteps", True, TypeError, "scheduler.num_train_timesteps"),
    ("flow_shift", float("nan"), ValueError, "scheduler.flow_shift: expected a finite number"),
    ("flow_shift", 0.0, ValueError, "scheduler.flow_shift"),
    ("solver_order", 50, ValueError, "scheduler.solver_order"),
    ("prediction_type", "flow", ValueError, "scheduler.prediction_type: expected one of"),
    ("use_flow_sigmas", "yes", TypeError, "scheduler.use_flow_sigmas"),
    ("trained_betas", [0.1] * 5, ValueError, "scheduler.trained_betas"),
    ("disable_corrector", [1, "x"], TypeError, "scheduler.disable_corrector[1]"),
    ("some_new_float", float("inf"), ValueError, "scheduler.some_new_float: expected a finite number"),
    ("beta_start", 0.5, ValueError, "must not exceed beta_end"),
])
def test_unipc_config_values_are_validated(key, value, exc, words):
    from worldstereo.config_checks import ConfigError

    with pytest.raises(exc) as info:
        make_unipc_scheduler({key: value})
    assert words in str(info.value) and isinstance(info.value, ConfigError)


_json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**40), max_value=2**40)
                            | st.floats() | st.text(max_size=12),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(DEFAULT_UNIPC_CONFIG) + ["use_dynamic_shifting", "time_shift_type", "sigma_min",
                                                            "sigma_max", "shift_terminal", "other"]),
       value=_json_values | st.sampled_from([0, 1, 2, 3, 1000, 10**9, "linear", "bh1", "sigma_min", "trailing"]))
def test_arbitrary_scheduler_config_value_raises_only_value_errors(key, value):
    try:
        scheduler = make_unipc_scheduler({key: value})
    except ValueError:  # ConfigError / ConfigTypeError, or diffusers' own ValueError for a bad combination
        return
    scheduler.set_timesteps(3)
    assert len(scheduler.timesteps) == 3
