"""TransformersDepthEstimator with a tiny random Depth Anything model built offline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from worldstereo.depth import (  # noqa: E402
    DepthEstimator,
    DepthPrediction,
    TransformersDepthEstimator,
    estimate_depth,
    get_depth_estimator,
)


def _build_tiny_depth_anything(path, depth_estimation_type: str = "relative") -> None:
    from worldstereo.testing import save_tiny_depth_model

    save_tiny_depth_model(path, depth_estimation_type)


@pytest.fixture(scope="module")
def tiny_relative(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_da_rel")
    _build_tiny_depth_anything(d, "relative")
    return d


@pytest.fixture(scope="module")
def tiny_metric(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_da_metric")
    _build_tiny_depth_anything(d, "metric")
    return d


def _raw_output(model_dir, image):
    """Independent forward pass: processor + model + bilinear resize to the image size."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    proc = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForDepthEstimation.from_pretrained(model_dir).eval()
    with torch.no_grad():
        px = proc(images=image, return_tensors="pt", do_rescale=False)["pixel_values"]
        pred = model(pixel_values=px).predicted_depth
    return F.interpolate(pred[:, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def test_relative_depth_is_inverse_disparity_with_unit_median(tiny_relative):
    torch.manual_seed(1)
    image = torch.rand(3, 30, 45)  # odd size on purpose
    est = TransformersDepthEstimator(tiny_relative, device="cpu", local_files_only=True)
    assert isinstance(est, DepthEstimator)
    assert est.prediction_type == "relative_disparity" and not est.is_metric
    pred = est(image)
    assert isinstance(pred, DepthPrediction)
    assert pred.depth.shape == (30, 45) and pred.valid_mask.shape == (30, 45)
    assert pred.valid_mask.dtype == torch.bool and not pred.is_metric and pred.K is None
    valid = pred.valid_mask
    assert valid.float().mean() > 0.5
    assert torch.all(pred.depth[~valid] == 0) and torch.all(pred.depth[valid] > 0)
    assert abs(float(pred.depth[valid].median()) - 1.0) < 1e-5
    disp = _raw_output(tiny_relative, image)
    assert torch.equal(valid, disp > 1e-3 * disp.max())
    # depth * disparity is one constant (1 / median disparity-inverse) over the valid pixels
    prod = pred.depth[valid] * disp[valid]
    assert float(prod.std() / prod.mean()) < 1e-4
    assert float(disp[valid].max()) / float(disp[valid].min()) > 1.05  # the map is not trivially flat


def test_metric_model_keeps_metric_values(tiny_metric):
    image = torch.rand(3, 28, 42, generator=torch.Generator().manual_seed(2))
    pred = estimate_depth(image, str(tiny_metric))
    assert pred.is_metric
    raw = _raw_output(tiny_metric, image)
    assert torch.allclose(pred.depth[pred.valid_mask], raw[pred.valid_mask], rtol=1e-5, atol=1e-6)
    assert float(pred.depth.max()) <= 20.0 + 1e-4  # Depth Anything metric head: sigmoid * max_depth


def test_factory_dispatch_and_errors(tiny_relative, tmp_path):
    assert isinstance(get_depth_estimator(tiny_relative), TransformersDepthEstimator)
    with pytest.raises(ValueError, match="prediction_type"):
        TransformersDepthEstimator(tiny_relative, prediction_type="bogus")
    with pytest.raises(OSError, match="cannot load depth model"):
        TransformersDepthEstimator(tmp_path / "no_such_model_dir", local_files_only=True)
    est = TransformersDepthEstimator(tiny_relative, device="cpu")
    with pytest.raises(ValueError, match="image"):
        est(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="image"):
        estimate_depth(torch.rand(4, 16, 16), est)
