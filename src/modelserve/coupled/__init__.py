"""The coupled architecture: the handler *and* the model in every Gunicorn worker, as the seed ran it.

Kept as a product feature so that ``modelserve tune`` and benchmarks can show the decoupled stack next to the
deployment it replaces, running the same handler module on the same model.
"""
