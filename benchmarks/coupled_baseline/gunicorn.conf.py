"""Gunicorn settings of the coupled baseline: sync workers, each with its own model (see ``app.py``).

Workers and the bind address are left to the command line (``-w 2 -b 127.0.0.1:8080``); 2 sync workers
x 1 ONNX Runtime thread is the best configuration on 2 cores (ANCHORS.md).
"""

from pathlib import Path

# The repository root, so ``benchmarks.coupled_baseline.app`` imports from any working directory.
chdir = str(Path(__file__).resolve().parents[2])
wsgi_app = "benchmarks.coupled_baseline.app:create_app()"
worker_class = "sync"
workers = 2
# No preload: each worker loads the model after the fork, as the seed did.
preload_app = False
loglevel = "warning"
