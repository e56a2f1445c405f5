"""``worldstereo app``: option checks before serving, safe defaults, the checkpoint read lazily."""

from __future__ import annotations

import pytest

from worldstereo.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--port", "0"], "--port"),
    (["--port", "70000"], "--port"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--max-frames", "1"], "--max-frames"),
    (["--host", ""], "--host"),
    (["--memory-tier", "bogus"], "--memory-tier"),
    (["--memory-tier", "group_offload", "--device", "cpu"], "needs a CUDA device"),
    (["--model", "not a model"], "--model"),
    (["--device", "nonsense"], "--device"),
])
def test_bad_options_fail_before_serving(argv, message, capsys, monkeypatch):
    import worldstereo.app.ui as ui

    monkeypatch.setattr(ui, "launch", lambda *a, **k: pytest.fail("served despite a bad option"))
    assert main(["app", *argv]) == 2
    assert message in capsys.readouterr().err


def test_model_file_is_refused(tmp_path, capsys):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    assert main(["app", "--model", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_defaults_bind_loopback_and_read_only_the_checkpoint_config(tiny_checkpoint_folder, monkeypatch):
    pytest.importorskip("gradio")
    import worldstereo.app as app_pkg

    seen = {}

    def fake_launch(models, **kwargs):
        seen.update(kwargs, models=models)

        class Demo:
            def close(self):
                seen["closed"] = True

        return Demo()

    monkeypatch.setattr(app_pkg, "launch", fake_launch)
    assert main(["app", "--model", str(tiny_checkpoint_folder)]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7860 and seen["max_upload_mb"] == 50
    assert seen["scale_map"] == [[48, 64], [64, 48], [64, 64]] and seen["default_frames"] == 4  # its config.json
    assert not seen["models"].loaded and seen["closed"]


@pytest.fixture(scope="module")
def tiny_checkpoint_folder(tmp_path_factory):
    from worldstereo.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("app-cli") / "tiny", "worldstereo-memory")
