"""Render coverage (share of non-hole pixels) and the low-coverage warning."""

from __future__ import annotations

import logging

import pytest
import torch

from worldstereo.geometry.coverage import (
    LOW_COVERAGE_THRESHOLD,
    first_low_coverage_frame,
    render_coverage,
    warn_low_coverage,
)


def test_coverage_counts_non_hole_pixels_per_frame():
    mask = torch.zeros(3, 1, 4, 5)
    mask[1, 0, :2] = 1.0  # 10 of 20 pixels are holes
    mask[2] = 1.0
    assert render_coverage(mask) == [1.0, 0.5, 0.0]
    assert render_coverage(mask[:, 0].bool()) == [1.0, 0.5, 0.0]  # (F,H,W) bool
    assert render_coverage(mask[1, 0]) == [0.5]  # one (H,W) frame
    assert render_coverage(torch.full((1, 2, 2), 0.25)) == [0.75]  # soft masks count fractionally


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="hole_mask"):
        render_coverage(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="hole_mask"):
        render_coverage(torch.full((1, 2, 2), 2.0))
    with pytest.raises(TypeError, match="hole_mask"):
        render_coverage([[0, 1]])


def test_warning_names_the_first_low_frame_and_the_fixes(caplog):
    cov = [1.0, 0.9, 0.25, 0.1, 0.5]
    assert first_low_coverage_frame(cov) == 2
    assert first_low_coverage_frame(cov, 0.05) is None
    with caplog.at_level(logging.WARNING):
        assert warn_low_coverage(cov, what="render") == 2
    text = caplog.text
    assert "frame 2 covers only 25%" in text and f"below {100 * LOW_COVERAGE_THRESHOLD:.0f}%" in text
    assert "lowest 10% at frame 3" in text
    assert "fit" in text and "shorten" in text and "depth scale" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert warn_low_coverage([1.0, 0.8]) is None
    assert caplog.text == ""
