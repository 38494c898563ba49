"""The model server's failures as the gateway's HTTP statuses: one table, applied at the edge.

The caller of the gateway sees the model server's *message* verbatim in ``{"error": message}`` and a status
that says whose fault it was::

    code (modelserve.errors.Code)              gateway status   why
    INVALID_ARGUMENT, OUT_OF_RANGE             400              the request (as preprocessed) is wrong
    FAILED_PRECONDITION                        400              TF Serving's own mapping; REST says 400 too
    NOT_FOUND                                  404              unknown model, version, label, signature
    ALREADY_EXISTS, ABORTED                    409
    RESOURCE_EXHAUSTED                         429              the model's batch queue is full: back off
                                               413              ... when the REST server answered 413
    UNAVAILABLE (refused, reset, not ready)    503              the model server is down or starting
    DEADLINE_EXCEEDED (a timeout)              504
    anything else (INTERNAL, UNKNOWN,          502              the model server failed; the caller's
      UNIMPLEMENTED, UNAUTHENTICATED, ...)                      request is not at fault

UNAUTHENTICATED and PERMISSION_DENIED become 502, not 401/403: they concern the gateway's own credentials
toward the model server, which the caller cannot fix.
"""

from __future__ import annotations

from modelserve.client import ModelServerError
from modelserve.errors import Code

STATUS_BY_CODE: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.OUT_OF_RANGE: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}
BAD_GATEWAY = 502

# Statuses a REST model server may send that are kept as they are, being more precise than the code's.
_KEPT_HTTP = frozenset({413})


def http_status(error: ModelServerError) -> int:
    """The gateway's status for a failed model-server call."""
    if error.http_status is not None and error.http_status in _KEPT_HTTP:
        return error.http_status
    status = STATUS_BY_CODE.get(error.code)
    if status is not None:
        return status
    # A 4xx the client could not name (a V2 server's 422, say) is still the caller's fault: keep it a 4xx.
    if error.code is Code.UNKNOWN and error.http_status is not None and 400 <= error.http_status < 500:
        return error.http_status
    return BAD_GATEWAY
