"""Tests for worldstereo.io.image: loading from every source, error messages, resizing with K."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import PIL
from PIL import Image

from worldstereo.io.image import (
    load_image,
    rescale_intrinsics,
    resize_image,
    resize_image_and_intrinsics,
    save_image,
    to_pil,
)


@pytest.fixture
def rgb_array() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)


def test_load_from_path_pil_tensor_numpy_agree(tmp_path, rgb_array):
    p = tmp_path / "img.png"
    Image.fromarray(rgb_array).save(p)
    expected = torch.from_numpy(rgb_array).permute(2, 0, 1).float() / 255
    for src in (p, str(p), Image.fromarray(rgb_array), expected.clone(), expected[None].clone(),
                torch.from_numpy(rgb_array).permute(2, 0, 1).contiguous(), rgb_array):
        img = load_image(src)
        assert img.shape == (3, 12, 20) and img.dtype == torch.float32
        assert torch.allclose(img, expected, atol=1e-6), type(src)


def test_load_modes(tmp_path, rgb_array):
    rgba = Image.fromarray(np.dstack([rgb_array, np.full(rgb_array.shape[:2], 7, np.uint8)]), "RGBA")
    assert torch.allclose(load_image(rgba), load_image(rgb_array))
    grey = Image.fromarray(rgb_array[..., 0], "L")
    g = load_image(grey)
    assert torch.equal(g[0], g[2]) and abs(float(g[0, 3, 4]) - rgb_array[3, 4, 0] / 255) < 1e-6
    v16 = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 200)
    p16 = tmp_path / "g16.png"
    Image.fromarray(v16).save(p16)
    im16 = load_image(p16)
    assert np.allclose(im16[0].numpy(), v16 / 65535.0, atol=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="condition_image.*does not exist"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path, name="image")


def test_not_an_image(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("hello, this is text")
    with pytest.raises(ValueError, match="condition_image.*not a readable image"):
        load_image(p)


def test_truncated_png(tmp_path, rgb_array):
    p = tmp_path / "t.png"
    big = np.random.default_rng(1).integers(0, 256, size=(200, 200, 3), dtype=np.uint8)
    Image.fromarray(big).save(p)
    p.write_bytes(p.read_bytes()[:400])
    with pytest.raises(ValueError, match="condition_image"):
        load_image(p)


@pytest.mark.parametrize(
    "bad, err, pattern",
    [
        (torch.rand(2, 3, 8, 8), ValueError, "single image"),
        (torch.rand(5, 8, 8), ValueError, "channels"),
        (torch.rand(8), ValueError, "shape"),
        (torch.rand(3, 8, 8) * 2, ValueError, r"\[0, 1\]"),
        (torch.rand(3, 8, 8) * 2 - 1, ValueError, r"\(x \+ 1\) / 2"),
        (torch.full((3, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.ones(3, 4, 4, dtype=torch.int64), TypeError, "dtype"),
        (torch.ones(3, 4, 4, dtype=torch.bool), TypeError, "boolean"),
        (np.zeros((4, 4, 3), np.int32), TypeError, "dtype"),
        (12345, TypeError, "expected a file path"),
    ],
)
def test_bad_inputs_name_the_parameter(bad, err, pattern):
    with pytest.raises(err, match=pattern) as info:
        load_image(bad, name="my_image")
    assert "my_image" in str(info.value)


def test_save_image_round_trip_and_atomic(tmp_path, rgb_array):
    img = torch.from_numpy(rgb_array).permute(2, 0, 1).float() / 255
    out = save_image(tmp_path / "o.png", img)
    assert torch.allclose(load_image(out), img, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    with pytest.raises(ValueError, match="extension"):
        save_image(tmp_path / "o.unknownext", img)
    assert to_pil(img[:1]).mode == "L"


def test_resize_rescales_K():
    K = torch.tensor([[100.0, 0, 32], [0, 110.0, 24], [0, 0, 1]])
    img = torch.rand(3, 48, 64)
    out, K2 = resize_image_and_intrinsics(img, K, 24, 128)
    assert out.shape == (3, 24, 128)
    assert torch.allclose(K2, torch.tensor([[200.0, 0, 64], [0, 55.0, 12], [0, 0, 1]]))
    # the principal point keeps pointing at the image centre; a world point keeps its relative position
    assert torch.allclose(rescale_intrinsics(K2, (24, 128), (48, 64)), K)
    assert resize_image(img, 48, 64) is img
    assert resize_image(torch.rand(2, 1, 8, 8), 4, 4, mode="nearest").shape == (2, 1, 4, 4)
    const = torch.full((3, 10, 10), 0.25)
    assert torch.allclose(resize_image(const, 7, 13), torch.full((3, 7, 13), 0.25), atol=1e-5)
    with pytest.raises(ValueError, match="height/width"):
        resize_image(img, 0, 4)


def test_32_bit_images_are_converted_or_refused_never_clipped(tmp_path, caplog):
    from worldstereo.io.errors import InputFileError

    ok_int = tmp_path / "i32.tif"
    Image.fromarray((np.arange(12 * 20, dtype=np.int32).reshape(12, 20) * 270)).save(ok_int)
    assert Image.open(ok_int).mode == "I"
    img = load_image(ok_int)
    assert abs(float(img[0, 11, 19]) - 239 * 270 / 65535) < 1e-6
    assert "32-bit integer image read as 16-bit" in caplog.text
    big = tmp_path / "big.tif"
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(big)
    with pytest.raises(InputFileError, match="32-bit integer.*65535"):
        load_image(big)
    f_ok = tmp_path / "f.tif"
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), mode="F").save(f_ok)
    assert torch.allclose(load_image(f_ok)[0], torch.linspace(0, 1, 16).reshape(4, 4))
    for name, value in (("over.tif", 1.5), ("neg.tif", -0.5), ("nan.tif", np.nan)):
        Image.fromarray(np.full((4, 4), value, np.float32), mode="F").save(tmp_path / name)
        with pytest.raises(InputFileError, match="32-bit float") as info:
            load_image(tmp_path / name, name="IMAGE")
        assert name in str(info.value) and "IMAGE" in str(info.value)
    with pytest.raises(ValueError, match="32-bit float"):  # a PIL image in memory: same rule
        load_image(Image.fromarray(np.full((4, 4), 2.0, np.float32), mode="F"))


@pytest.mark.parametrize("mode", ["P", "PA", "CMYK", "LA", "1", "YCbCr", "I;16"])
def test_other_modes_become_rgb(mode, tmp_path):
    img = Image.new(mode if mode != "I;16" else "I;16", (6, 4))
    fmt = "TIFF" if mode in ("CMYK", "YCbCr", "PA") else "PNG"
    p = tmp_path / f"x.{fmt.lower()}"
    img.save(p, format=fmt)
    try:
        with Image.open(p) as check:
            check.load()
    except OSError as exc:  # Pillow 12 writes a YCbCr TIFF it cannot read back itself
        pytest.skip(f"Pillow {PIL.__version__} cannot read back its own {mode} {fmt}: {exc}")
    t = load_image(p)
    assert t.shape == (3, 4, 6) and t.dtype == torch.float32 and 0 <= float(t.min()) <= float(t.max()) <= 1


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    from worldstereo.io import limits
    from worldstereo.io.errors import InputFileError

    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(p)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputFileError, match="exceeds the limit"):
        load_image(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own bomb check (an error above 2x)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 1 << 27)
    with pytest.raises(InputFileError, match="decompression bomb"):
        load_image(p)
