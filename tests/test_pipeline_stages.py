"""The batched stage driver of the pipeline (generate_videos / BatchedGeneration) and the sampling
loop's cache contexts, with tiny random models on the CPU.

Truth: each job run alone through generate_video. Batched runs must give the same video (<= 1e-5;
batched matrix products may round differently), really run as one batch (the transformer sees batch
B) and keep jobs that cannot share a forward apart.
"""

from __future__ import annotations

import pytest
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.pipeline import BatchedGeneration, SceneMemory, generate_video, generate_videos
from worldstereo.testing import tiny_model

H = W = 32

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd"])
def model(request):
    return tiny_model(request.param)


def _job(i: int, *, size: int = H, frames: int = 4, kind: str = "forward", **extra) -> dict:
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(i))
    trajectory = CameraTrajectory.preset(kind, num_frames=frames, height=size, width=size)
    job = dict(condition_image=image, camera_trajectory=trajectory, num_frames=frames, height=size, width=size,
               seed=100 + i, prompt=["a room", "the garden at night", ""][i % 3],
               depth_estimator=torch.full((size, size), 2.0 + i))
    job.update(extra)
    return job


def _unipc(model, **kw) -> dict:
    return {} if model.is_distilled else {"num_inference_steps": 2, "guidance_scale": 3.0, **kw}


class _Batches:
    """Records the batch size of every transformer call."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self.handle = model.transformer.register_forward_pre_hook(
            lambda m, a, kw: self.sizes.append(int(kw["hidden_states"].shape[0])), with_kwargs=True)

    def close(self):
        self.handle.remove()


def test_batched_videos_equal_separate_runs(model):
    jobs = [_job(i, kind=k, **_unipc(model)) for i, k in enumerate(["forward", "left", "orbit"])]
    alone = [generate_video(model, **job) for job in jobs]
    batches = _Batches(model)
    try:
        runner = BatchedGeneration(model, batch_size=3)
        results = []
        for i, job in enumerate(jobs):
            results += runner.submit(i, **job)
        assert runner.pending == 0 and len(results) == 3
    finally:
        batches.close()
    steps = 4 if model.is_distilled else 2 * 2
    assert batches.sizes == [3] * steps  # every call on the whole batch of 3
    for i in range(3):
        assert results[i].key == i and results[i].video.shape == (4, 3, H, W)
        torch.testing.assert_close(results[i].video, alone[i], atol=1e-5, rtol=0)
        assert results[i].record.batch_size == 3 and results[i].record.seed == 100 + i
        assert results[i].record.transformer_calls == steps


def test_incompatible_jobs_run_in_separate_batches():
    # jobs 0 and 2 share size and steps; job 1 has another size, job 3 another step count and frame count
    model = tiny_model("worldstereo-camera")
    other = {"num_inference_steps": 1}
    jobs = [_job(0, **_unipc(model)), _job(1, size=48, **_unipc(model)), _job(2, **_unipc(model)),
            _job(3, frames=5, **{**_unipc(model), **other})]
    alone = [generate_video(model, **job) for job in jobs]
    batches = _Batches(model)
    try:
        runner = BatchedGeneration(model, batch_size=4)
        results = []
        for i, job in enumerate(jobs):
            results += runner.submit(i, **job)
        assert results == [] and runner.pending == 4  # nothing full yet
        results = runner.flush()
    finally:
        batches.close()
    assert [r.key for r in results] == [0, 2, 1, 3]  # queues in the order of their first job
    assert [r.record.batch_size for r in results] == [2, 2, 1, 1]
    assert sorted(set(batches.sizes)) == [1, 2]
    for r in results:
        torch.testing.assert_close(r.video, alone[r.key], atol=1e-5, rtol=0)


def test_memory_variant_batches_need_the_same_ref_index():
    model = tiny_model("worldstereo-memory")
    refs = dict(reference_images=torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(9)),
                reference_w2c=torch.eye(4).expand(2, 4, 4).clone())
    jobs = [_job(0, ref_index=[0, 1], **refs, **_unipc(model)), _job(1, ref_index=[0, 2], **refs, **_unipc(model)),
            _job(2, ref_index=[0, 1], **refs, **_unipc(model))]
    alone = [generate_video(model, **job) for job in jobs]
    runner = BatchedGeneration(model, batch_size=2)
    results = []
    for i, job in enumerate(jobs):
        results += runner.submit(i, **job)
    results += runner.flush()
    assert [(r.key, r.record.batch_size) for r in results] == [(0, 2), (2, 2), (1, 1)]
    for r in results:
        assert r.record.ref_index == ([0, 2] if r.key == 1 else [0, 1])
        torch.testing.assert_close(r.video, alone[r.key], atol=1e-5, rtol=0)


def test_progress_callbacks_get_their_own_latents():
    model = tiny_model("worldstereo-camera")
    seen: dict[int, list] = {0: [], 1: []}
    jobs = [_job(i, **_unipc(model), progress_callback=lambda s, n, lat, i=i: seen[i].append((s, n, lat.clone())))
            for i in range(2)]
    videos = generate_videos(model, jobs, batch_size=2)
    torch.testing.assert_close(videos[1], generate_video(model, **_job(1, **_unipc(model))), atol=1e-5, rtol=0)
    assert [(s, n) for s, n, _ in seen[0]] == [(1, 2), (2, 2)] == [(s, n) for s, n, _ in seen[1]]
    assert seen[0][0][2].shape == (1, 16, 4, H // 8, W // 8)
    assert not torch.equal(seen[0][-1][2], seen[1][-1][2])  # each job's own slice


def test_failures_are_per_job_with_return_exceptions(tmp_path):
    model = tiny_model("worldstereo-camera")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    jobs = [_job(0, **_unipc(model)), dict(_job(1, **_unipc(model)), condition_image=str(broken)),
            _job(2, **_unipc(model))]
    out = generate_videos(model, jobs, batch_size=2, return_exceptions=True)
    assert isinstance(out[1], Exception) and "broken.png" in str(out[1])
    torch.testing.assert_close(out[0], generate_video(model, **jobs[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], generate_video(model, **jobs[2]), atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="broken.png"):
        generate_videos(model, jobs, batch_size=2)


def test_every_job_is_checked_before_model_work():
    model = tiny_model("worldstereo-camera")
    batches = _Batches(model)
    try:
        with pytest.raises(ValueError, match=r"jobs\[2\]: .*num_frames"):
            generate_videos(model, [_job(0), _job(1), dict(_job(2), num_frames=5)], batch_size=2)
        with pytest.raises(TypeError, match=r"jobs\[0\]: .*colour"):
            generate_videos(model, [dict(_job(0), colour="red")])
        with pytest.raises(ValueError, match=r"jobs\[1\]: missing \['camera_trajectory'\]"):
            generate_videos(model, [_job(0), {"condition_image": torch.rand(3, H, W)}])
        with pytest.raises(ValueError, match="batch_size"):
            generate_videos(model, [_job(0)], batch_size=0)
    finally:
        batches.close()
    assert batches.sizes == []


def test_a_job_with_its_own_memory_runs_alone_and_in_order():
    model = tiny_model("worldstereo-memory")
    shared = SceneMemory()
    reference = SceneMemory()
    kinds = ["forward", "left"]
    expected = [generate_video(model, **_job(i, kind=k, **_unipc(model)), memory=reference) for i, k in enumerate(kinds)]
    out = generate_videos(model, [_job(i, kind=k, memory=shared, **_unipc(model)) for i, k in enumerate(kinds)],
                          batch_size=2)
    assert [r.batch_size for r in shared.history] == [1, 1]
    assert len(shared.spatial) == len(reference.spatial) > 1  # the second job read what the first added
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_first_block_cache_through_generate_video_with_guidance():
    """diffusers' FirstBlockCache needs a cache context per guidance branch: the loop provides them."""
    from diffusers import FirstBlockCacheConfig

    model = tiny_model("worldstereo-camera")
    plain = generate_video(model, **_job(0, **_unipc(model)))
    model.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))  # never reuses: output unchanged
    try:
        cached = generate_video(model, **_job(0, **_unipc(model)))
    finally:
        model.transformer.disable_cache()
    torch.testing.assert_close(cached, plain, atol=1e-6, rtol=0)
