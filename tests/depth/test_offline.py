"""Depth models from the Hub without network: HF_HUB_OFFLINE is respected, no network fails after one
short probe, and the error says how to go on (--depth, HF_HUB_OFFLINE=1, downloading the model once)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldstereo.depth import TransformersDepthEstimator, get_depth_estimator
from worldstereo.depth.hub import PROBE_TIMEOUT_S, DepthModelUnavailableError, hub_offline

UNCACHED = "worldstereo-tests/no-such-depth-model"  # never in any cache


class _Connections:
    """Replaces socket connects: counts them and fails each like a machine without network."""

    def __init__(self, monkeypatch):
        self.count = 0
        monkeypatch.setattr(socket.socket, "connect", self._connect)
        monkeypatch.setattr(socket.socket, "connect_ex", self._connect)

    def _connect(self, *args, **kwargs):
        self.count += 1
        raise OSError(101, "Network is unreachable")


def _assert_hint(text: str, model: str) -> None:
    assert "--depth" in text and "depth_estimator=" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert f"huggingface-cli download {model}" in text and f"hf download {model}" in text


def test_offline_mode_fails_at_once_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = _Connections(monkeypatch)
    assert hub_offline()
    with pytest.raises(DepthModelUnavailableError) as info:
        TransformersDepthEstimator(UNCACHED, device="cpu")
    _assert_hint(str(info.value), UNCACHED)
    assert "HF_HUB_OFFLINE=1 forbids" in str(info.value)
    assert net.count == 0


def test_no_network_fails_after_one_probe(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    net = _Connections(monkeypatch)
    with pytest.raises(DepthModelUnavailableError) as info:
        get_depth_estimator(UNCACHED, device="cpu")
    _assert_hint(str(info.value), UNCACHED)
    assert "does not answer" in str(info.value)
    assert net.count <= 1  # at most the probe (none when the name does not resolve); the cache lookup makes none


def test_not_a_hub_id_nor_a_folder_is_named():
    with pytest.raises(OSError, match="neither a local model folder nor a Hugging Face id"):
        TransformersDepthEstimator("no/such/folder", device="cpu")


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unroutable-proxy"])
def test_cli_without_network_fails_with_the_hint(tmp_path, offline):
    """``worldstereo render`` needs the default depth model; an empty cache and no network."""
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "photo.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HTTP", "ALL_PROXY"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), NO_PROXY="", no_proxy="")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:  # a proxy nothing answers at: connecting hangs or is refused
        env.update(HTTPS_PROXY="http://10.255.255.1:3128", HTTP_PROXY="http://10.255.255.1:3128")
    proc = subprocess.run(
        [sys.executable, "-m", "worldstereo.cli", "--threads", "1", "render", str(tmp_path / "photo.png"),
         "--trajectory", "forward", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120 + PROBE_TIMEOUT_S,
    )
    assert proc.returncode != 0
    _assert_hint(proc.stderr, "depth-anything/Depth-Anything-V2-Small-hf")
    assert not (tmp_path / "out" / "render.mp4").exists()
    assert not (Path(env["HF_HOME"]) / "hub" / "models--depth-anything--Depth-Anything-V2-Small-hf" / "blobs").exists()


def test_probe_gives_up_on_a_proxy_that_never_answers(monkeypatch):
    """A proxy that accepts the connection and then says nothing (the slow case behind a corporate
    proxy): the probe returns after its timeout instead of waiting for the Hub client's retries."""
    import threading

    from worldstereo.depth.hub import hub_reachable

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])  # keep it open, never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        assert hub_reachable(timeout=0.5) is False
        assert accepted  # it did reach the silent proxy, and gave up
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
