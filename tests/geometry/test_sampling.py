"""Bilinear sampling with pixel centres at +0.5, against hand-computed values."""

import numpy as np
import torch

from worldstereo.geometry.sampling import sample_bilinear


def _image() -> torch.Tensor:
    # value = 10 * row + column, a second channel = its negative: bilinear sampling is exact on it
    r, c = torch.meshgrid(torch.arange(5.0, dtype=torch.float64), torch.arange(7.0, dtype=torch.float64),
                          indexing="ij")
    return torch.stack([10 * r + c, -(10 * r + c)])[None]


def test_pixel_centres_and_midpoints():
    img = _image()
    u = torch.tensor([[0.5, 3.5, 2.0, 4.25, 1.5]], dtype=torch.float64)  # column c at u = c + 0.5
    v = torch.tensor([[0.5, 2.5, 1.0, 3.75, 3.5]], dtype=torch.float64)
    vals, inside = sample_bilinear(img, u, v)
    assert inside.all()
    # the affine image 10 r + c sampled at (u, v) is 10 (v - 0.5) + (u - 0.5)
    expected = 10 * (v - 0.5) + (u - 0.5)
    np.testing.assert_allclose(vals[0, 0].numpy(), expected[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(vals[0, 1].numpy(), -expected[0].numpy(), atol=1e-12)


def test_outside_and_invalid_taps_are_not_inside():
    img = _image()
    # before the first centre, past the last one, NaN: not inside, value 0
    u = torch.tensor([[0.49, 6.51, 3.0, float("nan"), 3.0]], dtype=torch.float64)
    v = torch.tensor([[2.0, 2.0, 4.6, 2.0, 2.0]], dtype=torch.float64)
    vals, inside = sample_bilinear(img, u, v)
    assert inside.tolist() == [[False, False, False, False, True]]
    assert (vals[0, :, :4] == 0).all()
    # an invalid pixel invalidates the samples that use it as one of their four taps
    valid = torch.ones(1, 5, 7, dtype=torch.bool)
    valid[0, 2, 3] = False
    u = torch.tensor([[3.4, 3.6, 4.4, 2.6, 5.6]], dtype=torch.float64)
    v = torch.tensor([[2.4, 2.6, 3.4, 3.4, 2.5]], dtype=torch.float64)
    _, inside = sample_bilinear(img, u, v, valid)
    assert inside.tolist() == [[False, False, False, False, True]]
