"""Decide at once whether a model hub download can work: offline, a hub call retries for ~25 s."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from radsearch.encoders._registry import ModelLoadError

_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class HubUnavailableError(ModelLoadError):
    """The model must be downloaded from a hub, and this machine cannot reach it."""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline_reason(url: str | None = None) -> str | None:
    """Why ``url`` (default: the Hugging Face Hub) cannot be reached now, or None if it may be.

    Offline is declared by HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE; without a proxy, a host that
    does not resolve is offline too (a DNS failure is immediate, unlike the hub client's retries).
    """
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").upper() in _TRUE:
            return f"{variable} is set"
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return None
    host = urlparse(url or hub_endpoint()).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"{host} cannot be resolved: no network"
    return None


def require_download(model: str, source: str, hint: str, url: str | None = None) -> None:
    """Raise HubUnavailableError at once when ``source`` cannot be downloaded now."""
    reason = offline_reason(url)
    if reason is not None:
        raise HubUnavailableError(
            f"{model} needs a download of {source}, which is not in the local cache, and this "
            f"machine is offline ({reason}); {hint}"
        )
