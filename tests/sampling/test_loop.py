import logging

import pytest
import torch
from torch import nn

from worldstereo.sampling import DMDScheduler, denoise, make_unipc_scheduler

B, C, F, H, W = 2, 16, 3, 4, 6


class ConstantVelocity(nn.Module):
    """Stub transformer: the velocity depends only on the text embedding (its mean), and every call
    is recorded."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.calls = []

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=True, **kwargs):
        self.calls.append(dict(hidden_states=hidden_states.clone(), timestep=timestep.clone(),
                               text=encoder_hidden_states, kwargs=kwargs, return_dict=return_dict))
        v = encoder_hidden_states.float().mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return (v.expand(hidden_states.shape[0], C, *hidden_states.shape[2:]).to(hidden_states.dtype),)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, C, F, H, W, generator=g)
    condition = torch.randn(B, 20, F, H, W, generator=g)
    pos = torch.full((B, 7, 5), 2.0)
    neg = torch.full((B, 7, 5), -1.0)
    return latents, condition, pos, neg


def test_dmd_one_call_per_step_and_exact_euler():
    latents, condition, pos, _ = _inputs()
    model = ConstantVelocity()
    extra = {"render_latent": torch.ones(1), "ref_index": torch.tensor([0, 1])}
    seen = []
    out = denoise(model, latents, condition, scheduler=DMDScheduler(250, 1000, 5.0, 4), prompt_embeds=pos,
                  model_kwargs=extra, progress_callback=lambda s, n, x: seen.append((s, n, x.dtype)))
    assert len(model.calls) == 4
    assert seen == [(i, 4, torch.float32) for i in range(1, 5)]
    # constant velocity 2 from sigma = 1 to 0: x - 2
    torch.testing.assert_close(out, latents - 2.0, atol=1e-5, rtol=0)
    first = model.calls[0]
    assert first["timestep"].dtype == torch.float32 and first["timestep"].shape == (B,)
    assert first["timestep"].tolist() == [1000.0, 1000.0]
    assert model.calls[2]["timestep"][0].item() == pytest.approx(2500.0 / 3.0, abs=1e-3)  # not rounded
    torch.testing.assert_close(first["hidden_states"], torch.cat([latents, condition], 1), rtol=0, atol=0)
    assert first["kwargs"]["render_latent"] is extra["render_latent"]
    assert first["kwargs"]["ref_index"] is extra["ref_index"]
    assert first["return_dict"] is False


def test_unipc_cfg_two_separate_passes_and_guidance_formula():
    latents, condition, pos, neg = _inputs(1)
    model = ConstantVelocity()
    sched = make_unipc_scheduler()
    out = denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos, negative_prompt_embeds=neg,
                  guidance_scale=5.0, num_inference_steps=3)
    assert len(model.calls) == 6  # two passes per step
    for i in range(3):
        c, u = model.calls[2 * i], model.calls[2 * i + 1]
        assert torch.equal(c["text"], pos) and torch.equal(u["text"], neg)
        assert torch.equal(c["hidden_states"], u["hidden_states"]) and torch.equal(c["timestep"], u["timestep"])
        assert c["timestep"].dtype == torch.int64 and c["timestep"].shape == (B,)
    assert [model.calls[2 * i]["timestep"][0].item() for i in range(3)] == [999, 856, 599]
    # v = v_u + 5 (v_c - v_u) = -1 + 5 * 3 = 14, constant: the solver is exact, final = x_T - sigma_0 * 14
    torch.testing.assert_close(out, latents - sched.sigmas[0] * 14.0, atol=1e-4, rtol=0)
    # the scheduler is reset by the loop, so reuse gives the same result
    model.calls.clear()
    again = denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos, negative_prompt_embeds=neg,
                    guidance_scale=5.0, num_inference_steps=3)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_no_guidance_when_scale_is_one_or_no_negative(caplog):
    latents, condition, pos, neg = _inputs(2)
    model = ConstantVelocity()
    denoise(model, latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
            negative_prompt_embeds=neg, guidance_scale=1.0, num_inference_steps=2)
    assert len(model.calls) == 2
    model.calls.clear()
    with caplog.at_level(logging.WARNING, logger="worldstereo.sampling.loop"):
        denoise(model, latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
                guidance_scale=5.0, num_inference_steps=2)
    assert len(model.calls) == 2 and "negative_prompt_embeds" in caplog.text


def test_model_input_cast_to_transformer_dtype_latents_stay_fp32():
    latents, condition, pos, _ = _inputs(3)
    model = ConstantVelocity(dtype=torch.bfloat16)
    out = denoise(model, latents, condition, scheduler=DMDScheduler(), prompt_embeds=pos)
    assert model.calls[0]["hidden_states"].dtype == torch.bfloat16
    assert model.calls[0]["text"].dtype == torch.bfloat16
    assert model.calls[0]["timestep"].dtype == torch.float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, latents - 2.0, atol=2e-2, rtol=0)


def test_input_validation_before_any_call():
    latents, condition, pos, neg = _inputs()
    model = ConstantVelocity()
    sched = DMDScheduler()
    with pytest.raises(ValueError, match="condition"):
        denoise(model, latents, condition[:, :, :2], scheduler=sched, prompt_embeds=pos)
    with pytest.raises(ValueError, match="latents"):
        denoise(model, latents[0], condition, scheduler=sched, prompt_embeds=pos)
    with pytest.raises(ValueError, match="prompt_embeds"):
        denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos[:1])
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos, negative_prompt_embeds=neg[:, :3])
    with pytest.raises(ValueError, match="model_kwargs"):
        denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos, model_kwargs={"timestep": 1})
    with pytest.raises(ValueError, match="guidance_scale"):
        denoise(model, latents, condition, scheduler=sched, prompt_embeds=pos, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="num_inference_steps"):
        denoise(model, latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos)
    assert model.calls == []


class CachingVelocity(ConstantVelocity):
    """ConstantVelocity with diffusers' ``cache_context``: records the context of every call."""

    def __init__(self):
        super().__init__()
        self.context = None
        self.contexts = []

    def cache_context(self, name):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            previous, self.context = self.context, name
            try:
                yield
            finally:
                self.context = previous

        return ctx()

    def forward(self, *args, **kwargs):
        self.contexts.append(self.context)
        return super().forward(*args, **kwargs)


def test_passes_run_in_the_cache_context_of_their_guidance_branch():
    latents, condition, pos, neg = _inputs(2)
    model = CachingVelocity()
    denoise(model, latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
            negative_prompt_embeds=neg, guidance_scale=4.0, num_inference_steps=3)
    assert model.contexts == ["cond", "uncond"] * 3
    model.contexts.clear()
    denoise(model, latents, condition, scheduler=DMDScheduler(250, 1000, 5.0, 4), prompt_embeds=pos)
    assert model.contexts == ["cond"] * 4
    assert model.context is None  # every context closed


class _OtherRank:
    """CFG-parallel stand-in for two processes: this process runs ``branch``; the other rank's pass
    (which depends only on its text embedding) is computed here by a second stub, as that process would."""

    def __init__(self, branch, other_model, other_embeds):
        self.branch = branch
        self.other_model = other_model
        self.other_embeds = other_embeds

    def gather(self, v):
        other = self.other_model(hidden_states=torch.zeros(v.shape[0], 36, *v.shape[2:]), timestep=torch.zeros(1),
                                 encoder_hidden_states=self.other_embeds, return_dict=False)[0]
        return (v, other) if self.branch == "cond" else (other, v)


@pytest.mark.parametrize("branch", ["cond", "uncond"])
def test_cfg_parallel_runs_one_branch_and_combines_both_exactly(branch):
    latents, condition, pos, neg = _inputs(3)
    expected = denoise(ConstantVelocity(), latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
                       negative_prompt_embeds=neg, guidance_scale=5.0, num_inference_steps=3)
    mine, other = CachingVelocity(), ConstantVelocity()
    exchange = _OtherRank(branch, other, neg if branch == "cond" else pos)
    out = denoise(mine, latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
                  negative_prompt_embeds=neg, guidance_scale=5.0, num_inference_steps=3, cfg_parallel=exchange)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert len(mine.calls) == 3 and mine.contexts == [branch] * 3  # one pass per step: its own branch
    assert all(torch.equal(c["text"], pos if branch == "cond" else neg) for c in mine.calls)
    # without guidance every process runs the conditional pass and nothing is exchanged
    mine.calls.clear()
    denoise(mine, latents, condition, scheduler=DMDScheduler(250, 1000, 5.0, 4), prompt_embeds=pos,
            cfg_parallel=exchange)
    assert len(mine.calls) == 4 and len(other.calls) == 3


def test_cfg_parallel_needs_a_branch():
    latents, condition, pos, neg = _inputs()
    with pytest.raises(ValueError, match="cfg_parallel"):
        denoise(ConstantVelocity(), latents, condition, scheduler=make_unipc_scheduler(), prompt_embeds=pos,
                negative_prompt_embeds=neg, guidance_scale=5.0, num_inference_steps=2, cfg_parallel=object())


class NaNAtCall(ConstantVelocity):
    """Constant velocity, except that call number ``bad_call`` (1-based) returns NaN (or a huge
    value that overflows the scheduler update when ``huge``)."""

    def __init__(self, bad_call, huge=False):
        super().__init__()
        self.bad_call, self.huge = bad_call, huge

    def forward(self, hidden_states, *args, **kwargs):
        (v,) = super().forward(hidden_states, *args, **kwargs)
        if len(self.calls) == self.bad_call:
            v = torch.full_like(v, -3e38 if self.huge else float("nan"))
        return (v,)


def test_sampling_stops_at_the_first_non_finite_step():
    from worldstereo.sampling import NonFiniteLatentsError

    latents, condition, pos, _ = _inputs()
    scheduler = DMDScheduler(250, 1000, 5.0, 4)
    model = NaNAtCall(bad_call=3)
    seen = []
    with pytest.raises(NonFiniteLatentsError) as info:
        denoise(model, latents, condition, scheduler=scheduler, prompt_embeds=pos,
                progress_callback=lambda s, n, x: seen.append(s))
    err = info.value
    t3 = float(scheduler.timesteps[2])
    assert (err.step, err.total_steps) == (3, 4) and err.timestep == pytest.approx(t3)
    assert f"step 3/4 (timestep {t3:g})" in str(err) and "transformer output" in str(err)
    assert len(model.calls) == 3 and seen == [1, 2]  # stopped there, no further step
    assert isinstance(err, FloatingPointError)
    # finite model output whose update overflows float32: reported as the latents going non-finite
    model = NaNAtCall(bad_call=4, huge=True)  # x + (sigma_4 - sigma_3) v = 3e38 + 0.625 * 3e38 > float32 max
    with pytest.raises(NonFiniteLatentsError, match=r"latents \(scheduler update\) became non-finite at step 4/4"):
        denoise(model, torch.full_like(latents, 3e38), condition, scheduler=scheduler, prompt_embeds=pos)


@pytest.mark.parametrize("name", ["latents", "condition", "prompt_embeds", "negative_prompt_embeds", "render"])
def test_non_finite_inputs_are_refused_before_the_first_model_call(name):
    latents, condition, pos, neg = _inputs()
    args = dict(latents=latents, condition=condition, prompt_embeds=pos, negative_prompt_embeds=neg)
    kwargs = {"render": torch.ones(2)}
    if name == "render":
        kwargs["render"][1] = float("inf")
    else:
        args[name] = args[name].clone()
        args[name].view(-1)[5] = float("nan")
    model = ConstantVelocity()
    label = "model_kwargs['render']" if name == "render" else name
    with pytest.raises(ValueError, match=rf"{label.replace('[', '.').replace(']', '.')}: contains 1 non-finite"):
        denoise(model, args["latents"], args["condition"], scheduler=make_unipc_scheduler(), prompt_embeds=args[
            "prompt_embeds"], negative_prompt_embeds=args["negative_prompt_embeds"], guidance_scale=3.0,
                num_inference_steps=2, model_kwargs=kwargs)
    assert model.calls == []
