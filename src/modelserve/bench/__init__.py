"""``modelserve bench``: a load generator for HTTP and gRPC endpoints that also samples memory.

The engine (`load.run_load`) takes a `LoadSpec` and returns a `LoadResult`; `memory.MemorySampler` reads the
memory of the processes under load. ``modelserve tune`` drives both from Python. See docs/bench.md.
"""

from modelserve.bench.load import LoadResult, LoadSpec, ProgressSnapshot, RequestTemplate, run_load
from modelserve.bench.memory import MemoryResult, MemorySampler

__all__ = [
    "LoadResult",
    "LoadSpec",
    "MemoryResult",
    "MemorySampler",
    "ProgressSnapshot",
    "RequestTemplate",
    "run_load",
]
