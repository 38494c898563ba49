"""Server-side dynamic batching: one bounded queue per model version, merged runs, exact un-batching.

``BatchingServable`` wraps a loaded servable (TF Serving's BatchingSession is likewise a wrapper with the
session's interface); the inference service hands it requests with ``submit``. The modules, from pure to
threaded: ``policy`` (when to dispatch, tested with a fake clock), ``estimators`` (measured latency per batch
size, arrival rate), ``tensors`` (merge, pad, split), ``batcher`` (queues and batch threads).
"""
