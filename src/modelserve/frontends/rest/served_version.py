"""The ``x-model-version`` response header (which version served a REST inference) and ``x-routing-key``.

Labels and A/B splits make the serving version vary from request to request, so every predict, classify,
regress and V2 infer reply says which one answered (gRPC replies carry it in ``model_spec.version``, V2
bodies in ``model_version``). The lines are cached per version: the hot path concatenates nothing.
"""

from __future__ import annotations

import functools

HEADER = "x-model-version"
# Request header that makes an A/B split sticky: requests with equal keys are served by the same version.
ROUTING_KEY = b"x-routing-key"


@functools.lru_cache(maxsize=4096)
def version_line(version: int) -> bytes:
    return b"x-model-version: %d\r\n" % version


# The version each cached head names, so metrics read a reply's version with one lookup.
_VERSION_OF_HEAD: dict[bytes, str] = {}
_VERSION_FIELD = b"x-model-version: "


@functools.lru_cache(maxsize=4096)
def json_head(version: int) -> bytes:
    """Header lines of a JSON reply served by ``version`` (content type included)."""
    head = b"content-type: application/json\r\n" + version_line(version)
    _VERSION_OF_HEAD[head] = str(version)
    return head


def served_version(head: bytes) -> str | None:
    """The version a reply's header lines name (None: they name none)."""
    version = _VERSION_OF_HEAD.get(head)
    if version is not None:
        return version
    start = head.find(_VERSION_FIELD)  # V2 binary replies build their head per reply
    if start < 0:
        return None
    start += len(_VERSION_FIELD)
    return head[start : head.index(b"\r\n", start)].decode("ascii")
