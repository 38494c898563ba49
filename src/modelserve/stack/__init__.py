"""``modelserve stack``: one command that starts the model server, the gateway and optionally nginx.

Modules, one concept each: ``command`` (flags, signals), ``options`` (the validated configuration),
``stack`` (start in order, watch, stop in order), ``processes`` (the supervisor of child processes),
``probes`` (readiness checks), ``nginx`` (config generation and command line), ``memory`` (RSS/PSS per
process, also for benchmarks), ``report`` (what is printed).
"""

from modelserve.stack.command import add_stack_parser, run_stack

__all__ = ["add_stack_parser", "run_stack"]
