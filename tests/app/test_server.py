"""The app's safe defaults, server side: offline start-up, loopback binding, upload limit, no server paths."""

from __future__ import annotations

import ipaddress
import socket

import pytest

pytest.importorskip("gradio", reason="Gradio is not installed (pip install 'worldstereo[app]')")
httpx = pytest.importorskip("httpx")

from worldstereo.app import AppModels, ModelSpec, launch  # noqa: E402


def _loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every connection or name lookup that is not for this machine."""
    attempts: list[str] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guard(address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            attempts.append(str(address))
            raise OSError(f"test: network access to {address} refused")

    def guarded_connect(self, address):
        guard(address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        guard(address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        guard((host, 0))
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts


@pytest.fixture
def app(no_network, tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models = AppModels(ModelSpec(path=str(tiny_checkpoint)))
    demo = launch(models, port=port, max_upload_mb=1, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}", models, no_network
    demo.close()


def test_starts_offline_on_loopback_and_loads_nothing(app):
    demo, url, models, attempts = app
    assert demo.server_name == "127.0.0.1"
    page = httpx.get(url + "/", timeout=30)
    assert page.status_code == 200 and "WorldStereo" in page.text
    assert httpx.get(url + "/config", timeout=30).status_code == 200
    assert not models.loaded  # the checkpoint waits for the first generation
    assert attempts == []  # no analytics, version check, telemetry or download at start-up
    assert not demo.analytics_enabled
    with pytest.raises(OSError):  # the guard itself works (TEST-NET-1 address, never reached)
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    assert attempts == ["('192.0.2.1', 0)"]


def test_uploads_are_capped_and_server_paths_are_refused(app, tmp_path):
    demo, url, models, attempts = app
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 << 20))  # 2 MB > the 1 MB limit of this app
    with open(big, "rb") as fh:
        r = httpx.post(url + "/gradio_api/upload", files={"files": ("big.png", fh)}, timeout=30)
    assert r.status_code == 413
    # a client naming a file on the server instead of uploading it is refused before the app runs
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the client")
    r = httpx.post(url + "/gradio_api/call/on_load",
                   json={"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, None]}, timeout=30)
    assert r.status_code == 200
    events = httpx.get(url + f"/gradio_api/call/on_load/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "not uploaded by a user" in events
    assert attempts == []
