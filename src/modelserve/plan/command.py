"""``modelserve plan``: instances and dollars a month for a target traffic, decoupled and coupled.

Throughput per instance comes from ``--rps-per-instance`` or from a measured result (``--from``: the
``tune_result.json`` of ``modelserve tune``, whose best configuration of each architecture is used, the one
tune itself chose by; or the JSON of ``benchmarks/web_tier.py``, whose fastest configurations within the
memory budget are used). With
``--coupled-rps-per-worker``, ``--model-memory-gib`` and ``--instance-memory-gib``, the coupled architecture
is derived from how many model copies fit an instance.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelserve.plan.capacity import HOURS_PER_MONTH, Capacity, capacity, coupled_rps_per_instance


def add_plan_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="instances and monthly cost for a target traffic (decoupled vs coupled)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target-rps", type=float, required=True, help="requests/s to serve")
    parser.add_argument("--price-per-hour", type=float, required=True, help="price of one instance, per hour")
    parser.add_argument("--rps-per-instance", type=float, help="measured requests/s one instance serves")
    parser.add_argument(
        "--from", dest="result", type=Path, help="a tune_result.json or a benchmarks/web_tier.py JSON result"
    )
    parser.add_argument("--headroom", type=float, default=1.0, help="spare capacity factor (1.25: 25%%)")
    parser.add_argument("--hours-per-month", type=float, default=HOURS_PER_MONTH)
    coupled = parser.add_argument_group("the coupled architecture, from memory (optional)")
    coupled.add_argument("--coupled-rps-per-worker", type=float, help="requests/s of one worker with a model")
    coupled.add_argument("--model-memory-gib", type=float, help="memory of one model copy")
    coupled.add_argument("--instance-memory-gib", type=float, help="memory of one instance")
    parser.add_argument("--json", type=Path, help="also write the plans here")
    return parser


def run_plan(args: argparse.Namespace) -> int:
    try:
        plans = _plans(args)
    except ValueError as error:
        print(f"modelserve plan: error: {error}", file=sys.stderr)
        return 2
    _print(plans, args)
    if args.json:
        document = {
            "target_rps": args.target_rps,
            "headroom": args.headroom,
            "plans": [asdict(p) for p in plans],
        }
        args.json.write_text(json.dumps(document, indent=1))
    return 0


def _plans(args: argparse.Namespace) -> list[Capacity]:
    common = {"headroom": args.headroom, "hours_per_month": args.hours_per_month}
    plans: list[Capacity] = []
    if args.result is not None:
        stack, coupled = best_points(json.loads(args.result.read_text()))
        if stack is not None:
            plans.append(
                capacity("modelserve stack", args.target_rps, stack["rps"], args.price_per_hour, **common,
                         note=f"{stack['architecture']} {stack['worker_class']} x {stack['workers']} "
                              "(measured)")
            )  # fmt: skip
        if coupled is not None:
            plans.append(
                capacity("coupled", args.target_rps, coupled["rps"], args.price_per_hour, **common,
                         note=f"{coupled['workers']} workers, one model copy each (measured)")
            )  # fmt: skip
    elif args.rps_per_instance is not None:
        plans.append(
            capacity("measured", args.target_rps, args.rps_per_instance, args.price_per_hour, **common)
        )
    else:
        raise ValueError("give --rps-per-instance, or --from with a measured result")
    if args.coupled_rps_per_worker is not None:
        if args.model_memory_gib is None or args.instance_memory_gib is None:
            raise ValueError("--coupled-rps-per-worker needs --model-memory-gib and --instance-memory-gib")
        rps, workers = coupled_rps_per_instance(
            args.instance_memory_gib, args.model_memory_gib, args.coupled_rps_per_worker
        )
        plans.append(
            capacity("coupled (from memory)", args.target_rps, rps, args.price_per_hour, **common,
                     note=f"{workers} model copies fit {args.instance_memory_gib:g} GiB")
        )  # fmt: skip
    return plans


def best_points(result: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The best stack and coupled configurations of a measured result (None where none fitted).

    A ``modelserve tune`` result names them (``best_by_architecture``: the highest mean rate of each
    configuration's longest measurements, all within the limits, the rule tune chooses by); for a
    ``benchmarks/web_tier.py`` result they are its fastest points within the memory budget.
    """
    if "best_by_architecture" in result:
        chosen = result["best_by_architecture"] or {}
        stack, coupled = chosen.get("stack"), chosen.get("coupled")
    else:
        fitting = [p for p in result.get("points", []) if p.get("fits")]
        stack = max((p for p in fitting if str(p["architecture"]).startswith("stack")),
                    key=lambda p: p["rps"], default=None)  # fmt: skip
        coupled = max(
            (p for p in fitting if p["architecture"] == "coupled"), key=lambda p: p["rps"], default=None
        )
    if stack is None and coupled is None:
        raise ValueError("the result has no configuration within its limits")
    return stack, coupled


def _print(plans: list[Capacity], args: argparse.Namespace) -> None:
    print(
        f"target {args.target_rps:g} requests/s, headroom {args.headroom:g}, "
        f"${args.price_per_hour:g} per instance-hour, {args.hours_per_month:g} hours a month"
    )
    for plan in plans:
        print(
            f"  {plan.architecture:24} {plan.rps_per_instance:9.1f} req/s per instance -> "
            f"{plan.instances:4d} instances, ${plan.hourly_cost:,.2f}/h, ${plan.monthly_cost:,.0f} a month"
            + (f"  ({plan.note})" if plan.note else "")
        )
