"""benchmarks/gpu.py: fails fast without CUDA, and its logic runs end to end at tiny size on the CPU
(``--dry-run``: tiers through their hooks without streams, context parallel on two gloo processes)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.fixture
def gpu_bench(monkeypatch):
    # importable by name (``gpu``) so that the spawned context-parallel workers can unpickle it
    monkeypatch.syspath_prepend(str(BENCH.parent))
    monkeypatch.delitem(sys.modules, "gpu", raising=False)
    return importlib.import_module("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_cuda_it_stops_with_a_clear_message(gpu_bench, capsys):
    assert gpu_bench.main([]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--dry-run" in err


def test_dry_run_covers_tiers_encoders_and_context_parallel(gpu_bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert gpu_bench.main(["--dry-run", "--cp", "2", "--tiers", "resident", "fp8", "group_offload",
                           "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {(r["variant"], r["tier"]) for r in data["rows"]}
    assert rows == {(v, t) for v in ("worldstereo-camera", "worldstereo-memory")
                    for t in ("resident", "fp8", "group_offload")}
    assert all(r["seconds_per_forward"] > 0 for r in data["rows"])
    assert set(data["encoders"]) == {"text_encoder", "image_encoder", "vae"}
    assert data["context_parallel"]["seconds"] > 0 and "context parallel (Ulysses, 2 ranks" in text
    # DMD rows are derived from the memory transformer: 4 steps of 1 forward
    assert "| worldstereo-memory-dmd | fp8 |" in text
    for r in data["rows"]:
        if r["variant"] == "worldstereo-memory":
            video = 4 * r["seconds_per_forward"] + sum(data["encoders"].values())
            assert f"| worldstereo-memory-dmd | {r['tier']} | {r['seconds_per_forward']:.2f} |" in text
            assert f"{video:.1f} |" in text
