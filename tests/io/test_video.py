"""Tests for worldstereo.io.video: H.264 round trip, atomicity, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from worldstereo.io.video import frames_to_uint8, read_video, write_video  # noqa: E402


def _smooth_frames(t: int = 5, h: int = 48, w: int = 64) -> torch.Tensor:
    """Smooth, distinct frames (H.264 reproduces these closely)."""
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    frames = []
    for i in range(t):
        s = i / max(t - 1, 1)
        frames.append(torch.stack([x, y, torch.full_like(x, s)]))
    return torch.stack(frames)  # (T,3,H,W)


def test_round_trip_float(tmp_path):
    frames = _smooth_frames()
    out = write_video(tmp_path / "v.mp4", frames, fps=16)
    assert out.is_file()
    back = read_video(out)
    assert back.shape == frames.shape
    assert back.dtype == torch.float32
    assert float(back.min()) >= 0.0 and float(back.max()) <= 1.0
    # lossy but close; the per-frame constant blue channel identifies the frame order
    assert float((back - frames).abs().mean()) < 0.02
    assert torch.allclose(back[:, 2].mean(dim=(1, 2)), frames[:, 2].mean(dim=(1, 2)), atol=0.03)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == 16
    # no temporary files left behind
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_round_trip_uint8_hwc(tmp_path):
    frames = (_smooth_frames(3).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    write_video(tmp_path / "u.mp4", frames, fps=8)
    back = read_video(tmp_path / "u.mp4")
    assert back.shape == (3, 3, 48, 64)
    assert np.abs(back.permute(0, 2, 3, 1).numpy() * 255 - frames).mean() < 5


def test_binary_mask_survives_threshold(tmp_path):
    """A white = hole mask video must threshold back exactly away from edges (reference reads it at 0.5)."""
    mask = torch.zeros(4, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1.0
    write_video(tmp_path / "m.mp4", mask)
    back = read_video(tmp_path / "m.mp4")[:, :1] > 0.5
    assert torch.equal(back, mask > 0.5)


def test_odd_size_rejected(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", torch.rand(2, 3, 33, 64))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "frames",
    [torch.rand(3, 32, 32), torch.rand(2, 2, 32, 32), torch.rand(0, 3, 32, 32), np.zeros((2, 32, 32, 4), np.uint8)],
)
def test_bad_shapes(tmp_path, frames):
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "bad.mp4", frames)


def test_nan_rejected():
    f = torch.rand(1, 3, 8, 8)
    f[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        frames_to_uint8(f)


def test_existing_file_untouched_on_failure(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_video(target, torch.rand(1, 3, 31, 32))
    assert target.read_bytes() == b"old"


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(bad)


@pytest.mark.parametrize("suffix, container", [(".mp4", "mp4"), (".m4v", "mp4"), (".mov", "mov"),
                                               (".mkv", "matroska"), (".avi", "avi"), (".AVI", "avi")])
def test_container_follows_the_extension(tmp_path, suffix, container):
    frames = _smooth_frames(t=3, h=16, w=16)
    p = write_video(tmp_path / f"v{suffix}", frames, fps=8)
    with av.open(str(p)) as c:
        assert container in c.format.name.split(",")
        assert c.streams.video[0].codec_context.name == "h264"
    back = read_video(p)
    assert back.shape == (3, 3, 16, 16) and float((back - frames).abs().mean()) < 0.05


@pytest.mark.parametrize("name", ["v.webm", "v.gif", "video", "v.mp4.txt"])
def test_other_extensions_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="unsupported extension"):
        write_video(tmp_path / name, torch.rand(2, 3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_float_frames_outside_unit_range_are_refused():
    for bad in (torch.full((2, 3, 8, 8), 1.5), torch.full((2, 3, 8, 8), -0.5)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            frames_to_uint8(bad)
    assert frames_to_uint8(torch.full((1, 3, 2, 2), 1.0 + 1e-4)).max() == 255  # rounding excess: clipped


def test_read_errors_are_input_file_errors_naming_the_file(tmp_path):
    from worldstereo.io.errors import InputFileError

    p = write_video(tmp_path / "ok.mp4", _smooth_frames(t=4, h=16, w=16))
    data = p.read_bytes()
    for name, blob in (("trunc.mp4", data[: len(data) // 3]), ("empty.mp4", b""), ("noise.mp4", bytes(range(256)))):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputFileError) as info:
            read_video(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(InputFileError, match="limit"):
        read_video(p, max_bytes=1000)
    with pytest.raises(InputFileError, match="directory"):
        read_video(tmp_path)
