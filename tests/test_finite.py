import pytest
import torch

from worldstereo import finite
from worldstereo.finite import all_finite, count_nonfinite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.complex64])
def test_detects_nan_and_inf_anywhere(dtype):
    t = torch.ones(7, 11, dtype=dtype)
    assert all_finite(t) and count_nonfinite(t) == (0, 0)
    for value, expected in ((float("nan"), (1, 0)), (float("inf"), (0, 1)), (-float("inf"), (0, 1))):
        u = t.clone()
        u[6, 10] = value
        assert not all_finite(u) and count_nonfinite(u) == expected


def test_finite_values_whose_sum_overflows_are_finite():
    t = torch.full((10,), 3e38)  # sum = 3e39 overflows float32, every value is finite
    assert torch.isinf(t.sum()) and all_finite(t)
    h = torch.full((100_000,), 60000.0, dtype=torch.float16)  # float16 sum would overflow
    assert all_finite(h)


def test_exact_check_runs_in_chunks(monkeypatch):
    monkeypatch.setattr(finite, "CHUNK_ELEMENTS", 5)
    t = torch.zeros(4, 6)
    t[0, 0], t[3, 5], t[2, 2] = float("nan"), float("inf"), float("nan")
    assert count_nonfinite(t) == (2, 1) and not all_finite(t)


def test_integer_bool_and_empty_tensors_are_finite():
    assert all_finite(torch.tensor([1, 2, 3])) and all_finite(torch.tensor([True]))
    assert all_finite(torch.empty(0)) and count_nonfinite(torch.empty(0, 3)) == (0, 0)
