"""Hugging Face Hub access of the depth models: cache first, offline mode, a fast failure without network.

A depth model given as a Hub id is loaded from the local cache without touching the network when it
is there. Otherwise the Hub is needed: with ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``)
that fails at once, and without network it fails after one short probe (:data:`PROBE_TIMEOUT_S`)
instead of the Hub client's retries. Both failures raise :class:`DepthModelUnavailableError`
saying how to go on: a depth map of one's own, or fetching the model once.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request

__all__ = ["PROBE_TIMEOUT_S", "DepthModelUnavailableError", "hub_offline", "hub_reachable", "offline_hint"]

logger = logging.getLogger(__name__)

#: Seconds the reachability probe of the Hub waits (connect + first answer) before giving up.
PROBE_TIMEOUT_S = 3.0

_TRUE = ("1", "on", "yes", "true")


class DepthModelUnavailableError(OSError, ValueError):
    """A depth model is neither local nor cached and the Hub cannot be used (offline or unreachable).

    Also a ``ValueError``: the input names a model this machine cannot load (the CLI answers with
    exit status 2 and the way out: ``--depth FILE`` or ``hf download``)."""


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for no network access (read now,
    so a value set after import counts)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    """The Hub's address (``HF_ENDPOINT``, default https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One request to the Hub (through the ``HTTPS_PROXY`` / ``HTTP_PROXY`` of the environment):
    True when any HTTP answer comes back within ``timeout`` seconds."""
    request = urllib.request.Request(hub_endpoint() + "/api/whoami-v2", method="HEAD")
    opener = urllib.request.build_opener()  # reads the proxy variables now (urlopen caches its opener)
    try:
        with opener.open(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:  # an answer (401 without a token): the Hub is there
        return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.debug("the Hugging Face Hub at %s is not reachable: %s", hub_endpoint(), exc)
        return False


def offline_hint(model: str, reason: str) -> str:
    """The message of :class:`DepthModelUnavailableError` for the Hub id ``model``."""
    return (
        f"depth model {model!r} is not in the local Hugging Face cache and {reason}. Either give a depth map of "
        f"the image instead (CLI: --depth depth.npy; Python: depth_estimator=<(H,W) array or .npy/.npz/.png file>), "
        f"or fetch the model once while online: `hf download {model}` (huggingface_hub < 1.0: "
        f"`huggingface-cli download {model}`); after that it loads from the cache, also with HF_HUB_OFFLINE=1 "
        "(which never touches the network). A local model folder works too."
    )


def check_hub_access(model: str) -> None:
    """Raise :class:`DepthModelUnavailableError` when the Hub id ``model`` (not cached) cannot be
    downloaded now: offline mode, or no answer from the Hub within :data:`PROBE_TIMEOUT_S`."""
    if hub_offline():
        raise DepthModelUnavailableError(offline_hint(model, "HF_HUB_OFFLINE=1 forbids downloading it"))
    if not hub_reachable():
        raise DepthModelUnavailableError(offline_hint(
            model, f"the Hub ({hub_endpoint()}) does not answer within {PROBE_TIMEOUT_S:g} s (no network or a proxy "
                   "that does not reach it)"))
