"""`from worldstereo.io import load_image` and the other public names resolve to their sub-modules."""

from __future__ import annotations

import importlib

import pytest

import worldstereo.io as io_pkg


def test_every_public_name_resolves_to_its_module():
    from worldstereo.io import load_image, read_ply, write_video  # noqa: F401 - the documented import

    from worldstereo.io.image import load_image as direct

    assert load_image is direct
    for name in io_pkg.__all__:
        value = getattr(io_pkg, name)
        module = importlib.import_module(io_pkg._EXPORTS[name], "worldstereo.io")
        assert value is getattr(module, name)
    assert set(io_pkg.__all__) <= set(dir(io_pkg))


def test_unknown_name():
    with pytest.raises(AttributeError, match="no attribute 'load_images'"):
        io_pkg.load_images  # noqa: B018
    with pytest.raises(ImportError):
        from worldstereo.io import load_images  # noqa: F401
