"""Safe input-file helpers: InputFileError, strict JSON, bounded .npy / .npz loading."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from worldstereo.io import limits
from worldstereo.io.errors import InputFileError, reading
from worldstereo.io.files import (
    check_input_file,
    finite_number,
    load_npy,
    load_npz,
    parse_json_text,
    read_json_file,
    read_text_file,
)


def _npy_header(shape, descr="<f8") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


def test_input_file_error_message_and_pickling():
    e = InputFileError("/a/b.json", "expected an integer, got 'x'", field="frames[2].w", option="--cameras")
    assert str(e) == "--cameras: '/a/b.json': frames[2].w: expected an integer, got 'x'"
    assert isinstance(e, ValueError)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is InputFileError and str(back) == str(e) and back.field == "frames[2].w"


def test_reading_converts_any_parser_failure(tmp_path):
    p = tmp_path / "f.json"
    for exc in (KeyError("w"), ZeroDivisionError("division by zero"), RecursionError(), TypeError("x"),
                UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), zipfile.BadZipFile("bad"),
                IndexError("i"), SyntaxError("broken PNG"), MemoryError()):
        with pytest.raises(InputFileError) as info:
            with reading(p, "camera file"):
                raise exc
        assert str(p) in str(info.value)
        # the library's own ValueError / TypeError messages are kept; anything else says what failed
        assert ("camera file" in str(info.value)) == (type(exc) not in (ValueError, TypeError))
        assert info.value.__cause__ is exc
    with pytest.raises(FileNotFoundError):  # a missing file stays a missing file
        with reading(p):
            raise FileNotFoundError("gone")
    with pytest.raises(InputFileError, match=r"^'.*f.json': w: bad$"):  # path filled in
        with reading(p):
            raise InputFileError(None, "bad", field="w")


@pytest.mark.parametrize("text, match", [
    ('{"a": NaN}', "NaN"), ('{"a": Infinity}', "Infinity"), ('{"a": -Infinity}', "Infinity"),
    ('{"a": 1e400}', "overflows"), ("[" * 100000 + "]" * 100000, "nested too deeply"), ("{", "line 1"),
    ("1" * 5000, "unusable JSON value|JSON"),
])
def test_strict_json(text, match):
    with pytest.raises(InputFileError, match=match):
        parse_json_text(text, "x.json")


def test_text_files(tmp_path):
    assert read_text_file(_w(tmp_path / "bom.txt", "\ufeffhello".encode()), "f") == "hello"
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_text_file(_w(tmp_path / "latin.txt", "caf\xe9".encode("latin-1")), "f")
    with pytest.raises(InputFileError, match="NUL"):
        read_text_file(_w(tmp_path / "nul.txt", b"a\x00b"), "f")
    with pytest.raises(InputFileError, match="is a directory"):
        read_text_file(tmp_path, "f")
    with pytest.raises(InputFileError, match="limit"):
        read_text_file(_w(tmp_path / "big.txt", b"x" * 100), "f", max_bytes=10)
    with pytest.raises(FileNotFoundError):
        read_json_file(tmp_path / "missing.json", "f")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="not a regular file"):  # never blocks reading a FIFO
        check_input_file(fifo, "f")


def _w(p, data: bytes):
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("value, kw, match", [
    (True, {}, "expected a number"), ("48", {}, "expected a number"), (float("nan"), {}, "finite"),
    (48.5, {"integer": True}, "fractional"), (0, {"positive": True}, "positive"), (10**400, {}, "too large"),
    (70000, {"maximum": 65536}, "<= 65536"),
])
def test_finite_number(value, kw, match):
    with pytest.raises(InputFileError, match=match):
        finite_number(value, "w", path="c.json", **kw)
    assert finite_number(48.0, "w", integer=True) == 48 and isinstance(finite_number(48.0, "w", integer=True), int)


def test_npy_declared_sizes_are_checked_before_allocating(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(load_npy(good, "d"), np.arange(6.0).reshape(2, 3))
    with pytest.raises(InputFileError, match="exceeds the limit"):
        load_npy(_w(tmp_path / "huge.npy", _npy_header((10**7, 10**7)) + b"\0" * 64), "d")
    with pytest.raises(InputFileError, match="truncated"):
        load_npy(_w(tmp_path / "lying.npy", _npy_header((1000,)) + b"\0" * 64), "d")
    with pytest.raises(InputFileError, match="pickle"):
        load_npy(_w(tmp_path / "obj.npy", _npy_header((2,), "|O") + b"\0" * 64), "d")
    with pytest.raises(InputFileError, match="not a valid .npy"):
        load_npy(_w(tmp_path / "garbage.npy", b"\x93NUMPY\x09\x09garbage"), "d")


def test_npz_members_are_checked_before_inflating(tmp_path):
    b = io.BytesIO()
    np.savez(b, a=np.ones(3), b=np.zeros((2, 2)))
    arrays = load_npz(_w(tmp_path / "ok.npz", b.getvalue()), "d")
    assert set(arrays) == {"a", "b"} and arrays["b"].shape == (2, 2)
    assert set(load_npz(tmp_path / "ok.npz", "d", keys=("b", "missing"))) == {"b"}
    bomb = io.BytesIO()  # a header declaring 10^12 doubles in a member of a few bytes
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("w2c.npy", _npy_header((10**12,)) + b"\0" * 16)
    with pytest.raises(InputFileError, match="limit|truncated"):
        load_npz(_w(tmp_path / "bomb.npz", bomb.getvalue()), "d")
    deflated = io.BytesIO()  # a member that inflates beyond the limit (checked from the zip directory)
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy_header((2**20,)) + b"\0" * (8 << 20))
    with pytest.raises(InputFileError, match="inflates"):
        load_npz(_w(tmp_path / "deflate.npz", deflated.getvalue()), "d", max_bytes=1 << 20)
    with pytest.raises(InputFileError, match="zip"):
        load_npz(_w(tmp_path / "garbage.npz", b"PK\x03\x04junk"), "d")
    assert limits.MAX_ARRAY_BYTES >= 1 << 30
