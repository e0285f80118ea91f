"""Traffic split between the stable and the canary model server, done by a real proxy.

The canary controller never routes a request itself: it sets the canary's share on a
:class:`TrafficRouter` and sends its replayed traffic to the router's ``endpoint``. Two
routers implement it, chosen by configuration: :mod:`llmops.serving.nginx_router` (a real
nginx, the embedded default) and :mod:`llmops.serving.gateway_router` (a Gateway API
``HTTPRoute``, production). What both share is here: the protocol, the confirmed
:class:`WeightChange`, the backend names and the argument checks.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

BACKEND_HEADER = "X-Llmops-Backend"
"""Response header naming the backend (``stable`` or ``canary``) that answered a request."""

STABLE = "stable"
CANARY = "canary"

class RouterError(RuntimeError):
    """The router could not apply or confirm a weight; the message names the cause and the fix."""


@dataclass(frozen=True)
class WeightChange:
    """A confirmed weight change: the new split, how long it took, and when it was confirmed.

    ``applied_s`` runs from the start of :meth:`TrafficRouter.set_weights` to the read-back
    that shows the new weights; ``confirmed_at`` is epoch seconds (for breach-to-rollback).
    """

    stable: int
    canary: int
    applied_s: float
    confirmed_at: float


@runtime_checkable
class TrafficRouter(Protocol):
    """Splits client traffic between the stable and the canary server."""

    @property
    def endpoint(self) -> str:
        """Base URL clients send their traffic to (``<endpoint>/v1/chat/completions``)."""
        ...

    def set_weights(self, canary_percent: int) -> WeightChange:
        """Route ``canary_percent``% of new requests to the canary; return once confirmed."""
        ...

    def weights(self) -> tuple[int, int]:
        """The split in force, read back from the proxy: ``(stable, canary)`` percent."""
        ...

    def close(self) -> None:
        """Release what the router holds (the nginx process); a closed router routes nothing."""
        ...


def check_percent(canary_percent: Any) -> int:
    """``canary_percent`` as an int in [0, 100]; raise naming the bad value otherwise."""
    if isinstance(canary_percent, bool) or not isinstance(canary_percent, int) or not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent: {canary_percent!r} is not an integer percent in [0, 100]")
    return canary_percent


def host_port(url: str, field: str = "url") -> str:
    """``host:port`` of an ``http://host:port[/path]`` URL (an nginx ``server`` address)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname or parsed.port is None:
        raise ValueError(f"{field}: {url!r} is not an http://host:port URL (an explicit port is required)")
    return f"{parsed.hostname}:{parsed.port}"
