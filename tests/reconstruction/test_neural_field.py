import os

import numpy as np
import pytest
import torch

from worldstereo.io.ply import read_ply
from worldstereo.reconstruction import masked_psnr, reconstruct
from worldstereo.reconstruction.neural_field import GaussianField, rasterize_gaussians

from ._scene import make_trajectory, render_views, ring_cameras

K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 6.5], [0, 0, 1]])


def _brute_force(means, sigmas, colors, opac, K, H, W, R, bg):
    """Per-pixel loop: composite every Gaussian whose footprint covers the pixel, front to back.

    Pixel (row y, column x) is evaluated at its centre (x + 0.5, y + 0.5); a Gaussian's footprint is
    the (2R+1)^2 pixels around the pixel that contains its projected centre (floor(u), floor(v))."""
    img = np.zeros((3, H, W))
    z = means[:, 2]
    u = K[0, 0] * means[:, 0] / z + K[0, 2]
    v = K[1, 1] * means[:, 1] / z + K[1, 2]
    s = np.clip(K[0, 0] * sigmas / z, 0.3, R / 2)
    order = np.argsort(z)
    for y in range(H):
        for x in range(W):
            T, c = 1.0, np.zeros(3)
            for g in order:
                if abs(x - np.floor(u[g])) > R or abs(y - np.floor(v[g])) > R:
                    continue
                a = opac[g] * np.exp(-0.5 * ((x + 0.5 - u[g]) ** 2 + (y + 0.5 - v[g]) ** 2) / s[g] ** 2)
                if a < 1 / 255:
                    continue
                a = min(a, 0.99)
                c += T * a * colors[g]
                T *= 1 - a
            img[:, y, x] = c + T * bg
    return img


def test_rasterizer_matches_brute_force_compositing():
    g = torch.Generator().manual_seed(0)
    n = 40
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.2, 1.0, 1.0]) - \
        torch.tensor([0.6, 0.5, -1.5], dtype=torch.float64)
    sig = torch.rand(n, generator=g, dtype=torch.float64) * 0.05 + 0.02
    col = torch.rand(n, 3, generator=g, dtype=torch.float64)
    op = torch.rand(n, generator=g, dtype=torch.float64) * 0.8 + 0.1
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    out = rasterize_gaussians(means, sig, col, op, torch.eye(4, dtype=torch.float64), K.double(), 14, 16,
                              radius=3, background=bg)
    ref = _brute_force(means.numpy(), sig.numpy(), col.numpy(), op.numpy(), K.double().numpy(), 14, 16, 3, bg.numpy())
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-9)


def test_rasterizer_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(1)
    means = (torch.rand(6, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4 + torch.tensor([0, 0, 2.0],
                                                                                          dtype=torch.float64)
    sig = torch.full((6,), 0.05, dtype=torch.float64)
    col = torch.rand(6, 3, generator=g, dtype=torch.float64)
    op = torch.full((6,), 0.6, dtype=torch.float64)
    w = torch.rand(3, 14, 16, generator=g, dtype=torch.float64)

    def f(m, c, o):
        return (rasterize_gaussians(m, sig, c, o, torch.eye(4, dtype=torch.float64), K.double(), 14, 16) * w).sum()

    assert torch.autograd.gradcheck(f, (means.requires_grad_(), col.requires_grad_(), op.requires_grad_()),
                                    eps=1e-6, atol=1e-5)


def test_render_depth_and_occlusion():
    # two Gaussians on the optical axis: the near one (red, opaque) hides the far one (green)
    means = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    f = GaussianField(means, torch.tensor([0.05, 0.05]), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]),
                      torch.tensor([0.999, 0.999]))
    Kc = np.array([[20.0, 0, 8.5], [0, 20.0, 7.5], [0, 0, 1]])  # axis through the centre of pixel (row 7, col 8)
    cam = make_trajectory(np.eye(4)[None], Kc[None], 14, 16)
    img, depth, acc = f.render(cam, 0, return_depth=True)
    c = img[:, 7, 8]
    assert c[0] > 0.9 and c[1] < 0.05
    assert abs(float(depth[7, 8]) - 1.0) < 0.02  # expected depth is dominated by the near Gaussian
    d = depth[acc > 0.01]
    assert d.min() >= 1.0 - 1e-5 and d.max() <= 2.0 + 1e-5


@pytest.fixture(scope="module")
def small_scene():
    cams = ring_cameras(7, size=40, arc_deg=90, start_deg=-135)
    frames, depth = render_views(cams)
    return cams, torch.from_numpy(frames).float(), torch.from_numpy(depth).float()


def test_fit_reduces_loss_and_exports(small_scene, tmp_path):
    cams, frames, depth = small_scene
    rec = reconstruct(frames, cams, "neural_field", depth, voxel_size=0.04, field_iterations=25, progress=False)
    f = rec.field
    assert isinstance(f, GaussianField)
    assert rec.quality_metrics["reprojection_psnr"] > 22
    assert rec.points.shape[1] == 3 and rec.points.shape[0] > 100
    img = f.render(cams, 2)
    assert img.shape == (3, 40, 40) and 0 <= img.min() and img.max() <= 1
    f2 = GaussianField.from_points(rec.points, rec.colors)
    before = np.mean([masked_psnr(f2.render(cams, t).numpy(), frames[t].numpy()) for t in range(7)])
    losses = f2.fit(frames, cams, iterations=30, progress=False)
    after = np.mean([masked_psnr(f2.render(cams, t).numpy(), frames[t].numpy()) for t in range(7)])
    assert after > before and np.mean(losses[-10:]) < np.mean(losses[:10])
    d = read_ply(f.save_ply(tmp_path / "g.ply"))
    assert d["xyz"].shape == (len(f), 3) and "f_rest_44" in d and "rot_3" in d
    mesh = f.to_mesh(cams)
    assert len(mesh.faces) > 50


@pytest.mark.skipif(os.environ.get("WORLDSTEREO_SKIP_SLOW_TESTS") == "1",
                    reason="WORLDSTEREO_SKIP_SLOW_TESTS=1 (takes 15 s on idle 2 cores, up to 90 s when busy)")
def test_heldout_psnr_128px():
    """Held-out view >= 25 dB at 128x128 (its training time is measured by benchmarks/neural_field.py)."""
    S = 128
    cams = ring_cameras(13, size=S, arc_deg=90, start_deg=-135)
    frames, depth = render_views(cams)
    ho = 6
    tr = [i for i in range(13) if i != ho]
    w2c, Ks = np.asarray(cams.w2c, dtype=np.float64), np.asarray(cams.K, dtype=np.float64)
    train = make_trajectory(w2c[tr], Ks[tr], S, S)
    held = make_trajectory(w2c[[ho]], Ks[[ho]], S, S)
    rec = reconstruct(torch.from_numpy(frames[tr]).float(), train, "neural_field",
                      torch.from_numpy(depth[tr]).float(), voxel_size=0.02, field_iterations=100, progress=False)
    psnr = masked_psnr(rec.field.render(held, 0).numpy(), frames[ho])
    assert psnr >= 25.0
