"""modelserve: one model server holding one copy of every model, many light web workers in front.

The package layout is the architecture:

- ``cli`` / ``server``: flags (TF Serving's names) and the composition root.
- ``config``: typed, frozen configuration and the TF Serving text-protobuf file formats.
- ``core``: pure Python + numpy: signatures, the servable protocol, the manager with its per-version
  state machine, sources, ref-counted handles, the inference pipeline.
- ``codecs``: wire formats <-> numpy (TF Serving JSON, ...).
- ``frontends``: thin protocol edges (TF Serving REST, ...).
- ``runtimes``: one adapter per ML framework, imported lazily.
- ``demo``: demo model repositories generated in code.
"""

__version__ = "0.1.0"
