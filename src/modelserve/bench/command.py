"""``modelserve bench``: load-test an HTTP endpoint, or modelserve's gRPC / V2 gRPC, and sample memory.

Closed loop by default (``-c`` clients, each sending as soon as its answer arrives); ``--rate`` switches to an
open loop (constant or ``--arrival poisson``) whose latencies count from each intended send time. The body
comes from ``--body`` (text, or ``@file``), ``--template`` (placeholders expanded per request, see
docs/bench.md), or ``--model`` (random inputs from the model's signature, read from the server). Memory of
``--pid`` processes or of a running ``modelserve stack`` (``--stack-ready-file``) is sampled during the run.
``--ceiling`` measures bench itself against a trivial local server. ``--architecture stack|coupled|both``
starts a handler and model itself (decoupled, or the model in every worker) and compares them. Exit
status: 0, or 1 when no request of the measured window succeeded, or 2 for bad arguments.

Examples::

    modelserve bench http://127.0.0.1:8501 --model tiny -c 32 -d 10
    modelserve bench grpc://127.0.0.1:8500 --model tiny --protocol v2 --rate 500 --arrival poisson
    modelserve bench http://127.0.0.1:8000/predict --body @request.json \\
        --stack-ready-file stack.json --json out.json
    modelserve bench --ceiling --processes 2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

from modelserve.bench.bodies import body_argument, expand_template, signature_request
from modelserve.bench.deployment import ArchitectureRun, add_deployment_arguments, comparison, deployments
from modelserve.bench.load import LoadResult, LoadSpec, RequestTemplate, run_load
from modelserve.bench.memory import MemoryResult, MemorySampler, stack_pids
from modelserve.bench.progress import LiveProgress
from modelserve.bench.report import (
    csv_row,
    document,
    memory_table,
    result_table,
    write_csv,
    write_csv_rows,
    write_json,
)

DEFAULT_CONCURRENCY = 8
CEILING_CONCURRENCY = 64


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="load-test an HTTP or gRPC endpoint: latency percentiles, throughput, errors, memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", nargs="?", help="http://host:port/path, or grpc://host:port")
    load = parser.add_argument_group("load")
    load.add_argument(
        "-c", "--concurrency", type=int,
        help="HTTP: connections, each with one request in flight (default 8, --ceiling 64); gRPC: calls in "
        "flight at once over one channel (one HTTP/2 connection) per process; open loop: the in-flight cap",
    )  # fmt: skip
    load.add_argument("--rate", type=float, help="open loop at this many requests/s (default: closed loop)")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant")
    load.add_argument("--seed", type=int, help="seed of Poisson arrivals and generated bodies")
    load.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds (default 10)")
    load.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default 1)")
    load.add_argument("-n", "--requests", type=int, help="stop after this many measured requests")
    load.add_argument("-p", "--processes", type=int, default=1, help="load-generating processes (default 1)")
    load.add_argument(
        "--timeout", type=float, default=10.0,
        help="seconds from a request's start (open loop: its intended time) to its 'timeout' (default 10)",
    )  # fmt: skip
    request = parser.add_argument_group("request")
    request.add_argument("-X", "--method", help="HTTP method (default POST with a body, else GET), "
                         "or the gRPC method path with a raw --body")  # fmt: skip
    request.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    bodies = request.add_mutually_exclusive_group()
    bodies.add_argument("--body", help="the body, or @file (gRPC: the serialized request message)")
    bodies.add_argument("--template", help="a body with {{placeholders}}, or @file")
    bodies.add_argument("--model", help="generate bodies from this model's signature (url: the server)")
    request.add_argument("--protocol", choices=("tfserving", "v2"), default="tfserving", help="with --model")
    request.add_argument("--signature-name", help="with --model (TF Serving)")
    request.add_argument("--batch", type=int, default=1, help="with --model: rows per request")
    request.add_argument("--pool", type=int, default=16, help="distinct bodies of --template / --model")
    memory = parser.add_argument_group("memory")
    memory.add_argument(
        "--pid", type=int, action="append", default=[], help="sample this process (repeatable)"
    )
    memory.add_argument("--stack-ready-file", help="sample every process of a running modelserve stack")
    memory.add_argument("--memory-interval", type=float, default=0.5, help="seconds between samples")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, help="write spec, result, memory and machine here")
    output.add_argument("--csv", type=Path, help="write one CSV row here")
    output.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.add_argument(
        "--ceiling", action="store_true", help="measure bench itself against a trivial server"
    )
    add_deployment_arguments(parser)
    return parser


def build_request(args: argparse.Namespace) -> RequestTemplate:
    """The request the arguments describe; ValueError for a contradiction."""
    url: str = args.url
    headers = tuple(_header(text) for text in args.header)
    if args.model:
        return signature_request(
            url, args.model, protocol=args.protocol, batch=args.batch, signature_name=args.signature_name,
            pool=args.pool, seed=args.seed, headers=headers,
        )  # fmt: skip
    if url.startswith("grpc://"):
        if not args.method or not args.body:
            raise ValueError("a grpc:// URL needs --model, or --method /package.Service/Method with --body")
        return RequestTemplate(url, args.method, body_argument(args.body), headers)
    if args.template:
        text = body_argument(args.template).decode()
        pool = expand_template(text, args.pool, args.seed)
        return RequestTemplate(url, args.method or "POST", headers=headers, bodies=pool)
    body = body_argument(args.body) if args.body else b""
    return RequestTemplate(url, args.method or ("POST" if body else "GET"), body, headers)


def _header(text: str) -> tuple[str, str]:
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise ValueError(f"--header expects 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def build_spec(args: argparse.Namespace, request: RequestTemplate) -> LoadSpec:
    default = CEILING_CONCURRENCY if args.ceiling else DEFAULT_CONCURRENCY
    return LoadSpec(
        request=request,
        concurrency=default if args.concurrency is None else args.concurrency,
        rate=args.rate,
        arrival=args.arrival,
        duration_s=args.duration,
        warmup_s=args.warmup,
        requests=args.requests,
        processes=args.processes,
        timeout_s=args.timeout,
        seed=args.seed,
    )


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        if args.ceiling:
            return _ceiling(args, out, err)
        if args.architecture:
            return _architectures(args, out, err)
        if not args.url:
            raise ValueError("give a URL to load (or --ceiling)")
        spec = build_spec(args, build_request(args))
        pids = list(args.pid) + (stack_pids(args.stack_ready_file) if args.stack_ready_file else [])
    except Exception as error:  # bad arguments, an unreadable file, or no metadata (server down, no model)
        from rich.markup import escape

        err.print(f"[red]modelserve bench: error:[/red] {escape(str(error))}", soft_wrap=True)
        return 2
    sampler = MemorySampler(pids, args.memory_interval) if pids else None
    with contextlib.ExitStack() as stack:
        if sampler is not None:
            stack.enter_context(sampler)
        result = _run(spec, args)
    memory = sampler.result() if sampler is not None else None
    _print(spec, result, memory, out, err)
    if args.json:
        write_json(args.json, spec, result, memory)
    if args.csv:
        write_csv(args.csv, spec, result, memory)
    return 0 if result.rps > 0 else 1


def _run(spec: LoadSpec, args: argparse.Namespace) -> LoadResult:
    if args.no_progress:
        return run_load(spec)
    with LiveProgress(spec.warmup_s + spec.duration_s) as live:
        return run_load(spec, live.update)


def _print(spec: LoadSpec, result: LoadResult, memory: MemoryResult | None, out: Any, err: Any) -> None:
    from rich.markup import escape

    out.print(result_table(spec, result))
    if memory is not None:
        out.print(memory_table(memory))
    for note in result.notes:
        err.print(f"[yellow]modelserve bench: warning:[/yellow] {escape(note)}", soft_wrap=True)


def _architectures(args: argparse.Namespace, out: Any, err: Any) -> int:
    """``--architecture``: start each deployment, load it with the same spec, sample all its processes."""
    runs: list[ArchitectureRun] = []
    specs: dict[str, LoadSpec] = {}
    request = _gateway_request(args, "")  # checked before anything starts; the URL is known once it is up
    build_spec(args, request)
    try:
        with contextlib.closing(deployments(args)) as started:
            for architecture, label, url, pids in started:
                err.print(f"modelserve bench: {label} is up at {url}", soft_wrap=True)
                spec = build_spec(args, dataclasses.replace(request, url=url))
                with MemorySampler(pids, args.memory_interval) as sampler:
                    result = _run(spec, args)
                runs.append(ArchitectureRun(architecture, label, result, sampler.result()))
                specs[architecture] = spec
    except Exception:
        _report_architectures(runs, specs, args, out)  # what was measured before the failure
        raise
    _report_architectures(runs, specs, args, out)
    return 0 if all(run.result.rps > 0 for run in runs) else 1


def _report_architectures(
    runs: list[ArchitectureRun], specs: dict[str, LoadSpec], args: argparse.Namespace, out: Any
) -> None:
    if not runs:
        return
    for run in runs:
        out.print(result_table(specs[run.architecture], run.result, title=f"modelserve bench: {run.label}"))
        out.print(memory_table(run.memory))
    if len(runs) == 2:
        out.print(comparison(runs), soft_wrap=True)
    if args.json:
        documents = {
            run.architecture: {
                "label": run.label,
                **document(specs[run.architecture], run.result, run.memory),
            }
            for run in runs
        }
        args.json.write_text(json.dumps({"architectures": documents}, indent=1, allow_nan=False) + "\n")
    if args.csv:  # one row per architecture, its configuration first
        rows = [
            {"architecture": run.label, **csv_row(specs[run.architecture], run.result, run.memory)}
            for run in runs
        ]
        write_csv_rows(args.csv, rows)


def _gateway_request(args: argparse.Namespace, url: str) -> RequestTemplate:
    """The request to a deployment bench started: --body or --template, sent to its URL."""
    headers = tuple(_header(text) for text in args.header)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers = (("Content-Type", "application/json"), *headers)
    if args.template:
        pool = expand_template(body_argument(args.template).decode(), args.pool, args.seed)
        return RequestTemplate(url, args.method or "POST", headers=headers, bodies=pool)
    if not args.body:
        raise ValueError("--architecture needs the request for the handler: --body or --template")
    return RequestTemplate(url, args.method or "POST", body_argument(args.body), headers)


def _ceiling(args: argparse.Namespace, out: Any, err: Any) -> int:
    from modelserve.bench.ceiling import measure_ceiling

    spec = build_spec(args, RequestTemplate("http://127.0.0.1:0/", "GET"))
    with (
        LiveProgress(spec.warmup_s + spec.duration_s)
        if not args.no_progress
        else contextlib.nullcontext() as live
    ):
        callback = live.update if isinstance(live, LiveProgress) else None
        result = measure_ceiling(spec.processes, spec.concurrency, spec.duration_s, spec.warmup_s, callback)
    _print(spec, result, None, out, err)
    out.print(
        f"bench's ceiling on this machine: {result.rps:,.0f} requests/s with {spec.processes} process(es) "
        f"and {spec.concurrency} connections against a trivial local server (sharing this machine's cores)",
        soft_wrap=True,
    )
    if args.json:
        write_json(args.json, spec, result, None)
    if args.csv:
        write_csv(args.csv, spec, result, None)
    return 0
