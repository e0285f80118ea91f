"""Container image references: the repository part and the digest pin (pure string rules).

Settings map image repositories to local runtimes, the launchers refuse unpinned images, and
manifests pin the serving runtime: all three read references the same way, from here.
"""

from __future__ import annotations

import re

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def is_pinned_by_digest(image: str) -> bool:
    """True when ``image`` names an exact content digest (``repo@sha256:<64 hex>``)."""
    return bool(_DIGEST.search(image))


def image_digest(image: str) -> str:
    """``sha256:<hex>`` of a digest-pinned reference; ``""`` for a reference without a digest."""
    return image.rsplit("@", 1)[1] if is_pinned_by_digest(image) else ""


def image_repository(image: str) -> str:
    """``registry/repo`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name
