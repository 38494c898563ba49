"""A Python client for modelserve (and TF Serving / KServe V2 servers): sync and asyncio, REST and gRPC.

::

    from modelserve.client import Client

    with Client("grpc://127.0.0.1:8500") as client:          # or "http://127.0.0.1:8501" for REST
        outputs = client.predict("tiny", {"x": batch})        # dict[str, np.ndarray]

``protocol="v2"`` speaks KServe V2 instead of TF Serving's API. Every failure raises `ModelServerError`
with a ``code`` (`modelserve.errors.Code`). The package imports numpy, grpcio, protobuf and orjson (aiohttp
for AsyncClient over REST), and the server's wire codecs, never a model framework or the server's core.
See ``docs/client.md``.
"""

from modelserve.client.client import AsyncClient, Client
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus, TensorInfo, VersionStatus
from modelserve.errors import Code

__all__ = [
    "AsyncClient",
    "Client",
    "Code",
    "ModelMetadata",
    "ModelServerError",
    "ModelStatus",
    "TensorInfo",
    "VersionStatus",
]
