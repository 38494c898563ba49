"""The HTML report of a tuning run: self-contained (plots are inline SVG rendered by matplotlib), no scripts.

Plots: requests/s against p99 latency for every trial (the SLO line, the chosen point marked), the peak
memory of every configuration (the budget line), and the best stack next to the best coupled configuration
when both architectures were measured (each architecture's best as `Search.best` defines it, never
recomputed here). When nothing fitted, the nearest misses and how far over each limit they were. A table
lists every trial, with its concurrency and whether the load generator saturated.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

from modelserve.tune.results import Limits, TrialResult
from modelserve.tune.search import SearchOutcome

MIB = 2**20
_COLOURS = {"stack": "#1f77b4", "coupled": "#d62728"}


def _svg(figure: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inlined into HTML


def throughput_vs_p99(trials: Sequence[TrialResult], best: TrialResult | None, limits: Limits) -> str:
    """Scatter: p99 (x) against requests/s (y), by architecture; infeasible hollow; the choice a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for architecture, colour in _COLOURS.items():
        for fits in (True, False):
            points = [
                t
                for t in trials
                if t.config.architecture == architecture and t.fits == fits and not t.failure
            ]
            if points:
                axes.scatter(
                    [t.p99_ms for t in points],
                    [t.rps for t in points],
                    s=40,
                    facecolors=colour if fits else "none",
                    edgecolors=colour,
                    label=f"{architecture} ({'within limits' if fits else 'over a limit'})",
                )
    if limits.p99_slo_ms is not None:
        axes.axvline(
            limits.p99_slo_ms, color="#555555", linestyle="--", label=f"p99 SLO {limits.p99_slo_ms:g} ms"
        )
    if best is not None:
        axes.scatter([best.p99_ms], [best.rps], marker="*", s=320, color="#ff9f1c", edgecolors="black",
                     zorder=5, label=f"chosen: {best.config.label}")  # fmt: skip
    axes.set_xlabel("p99 latency (ms)")
    axes.set_ylabel("requests/s")
    axes.set_title("Throughput vs p99 latency, every trial")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _svg(figure)


def memory_per_configuration(trials: Sequence[TrialResult], best: TrialResult | None, limits: Limits) -> str:
    """Horizontal bars: the peak PSS of each configuration; the budget line; the choice highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peaks: dict[str, tuple[int, str]] = {}
    for trial in trials:
        if trial.failure:
            continue
        label = trial.config.label
        previous = peaks.get(label, (0, ""))[0]
        peaks[label] = (max(previous, trial.peak_pss_bytes), trial.config.architecture)
    labels = sorted(peaks, key=lambda name: peaks[name][0])
    figure, axes = plt.subplots(figsize=(8, max(2.5, 0.32 * len(labels) + 1.2)))
    colours = [
        "#ff9f1c" if best is not None and name == best.config.label else _COLOURS[peaks[name][1]]
        for name in labels
    ]
    axes.barh(labels, [peaks[name][0] / MIB for name in labels], color=colours)
    if limits.memory_budget_bytes is not None:
        axes.axvline(limits.memory_budget_bytes / MIB, color="#555555", linestyle="--", label="memory budget")
        axes.legend(fontsize=8)
    axes.set_xlabel("peak PSS of every process (MiB)")
    axes.set_title("Memory per configuration (chosen in orange)")
    axes.tick_params(axis="y", labelsize=7)
    axes.grid(True, axis="x", alpha=0.3)
    return _svg(figure)


def coupled_vs_decoupled(stack: TrialResult, coupled: TrialResult) -> str:
    """Two panels: requests/s and peak memory of the best stack and the best coupled configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    names = [f"stack\n{stack.config.worker_class} x{stack.config.workers}",
             f"coupled\n{coupled.config.worker_class} x{coupled.config.workers}"]  # fmt: skip
    colours = [_COLOURS["stack"], _COLOURS["coupled"]]
    left.bar(names, [stack.rps, coupled.rps], color=colours)
    left.set_title("requests/s")
    right.bar(names, [stack.peak_pss_bytes / MIB, coupled.peak_pss_bytes / MIB], color=colours)
    right.set_title("peak memory (MiB)")
    figure.suptitle("Decoupled (modelserve stack) vs coupled (model in every worker), best of each")
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    return _svg(figure)


def nearest_misses(misses: Sequence[TrialResult], limits: Limits) -> str:
    """A table of the configurations closest to the limits, with each limit next to what was measured."""
    if not misses:
        return ""
    rows = []
    for trial in misses:
        over = []
        if limits.p99_slo_ms is not None and trial.p99_ms > limits.p99_slo_ms:
            over.append(f"p99 {trial.p99_ms:.1f} ms &gt; {limits.p99_slo_ms:g} ms")
        if limits.memory_budget_bytes is not None and trial.peak_pss_bytes > limits.memory_budget_bytes:
            over.append(
                f"{trial.peak_pss_bytes / MIB:.0f} MiB &gt; {limits.memory_budget_bytes / MIB:.0f} MiB"
            )
        device_budget = limits.device_memory_budget_bytes
        if device_budget is not None and (
            trial.peak_device_bytes is None or trial.peak_device_bytes > device_budget
        ):
            device = (
                "unknown" if trial.peak_device_bytes is None else f"{trial.peak_device_bytes / MIB:.0f} MiB"
            )
            over.append(f"GPU {device} &gt; {device_budget / MIB:.0f} MiB")
        if trial.errors > limits.max_error_ratio * max(trial.requests, 1) or not trial.requests:
            over.append(f"{trial.errors} errors in {trial.requests} requests")
        rows.append(
            f"<tr><td>{html.escape(trial.config.label)}</td><td>{trial.concurrency or '-'}</td>"
            f"<td>{trial.rps:.1f}</td><td>{'; '.join(over) or 'over a limit in one measurement'}</td></tr>"
        )
    return (
        "<h2>Nearest misses</h2><table class='misses'><tr><th>configuration</th><th>concurrency</th>"
        "<th>req/s</th><th>over</th></tr>" + "".join(rows) + "</table>"
    )


def render(outcome: SearchOutcome, limits: Limits, summary: Sequence[tuple[str, str]]) -> str:
    """The whole report as one HTML document."""
    trials, best = outcome.trials, outcome.best
    sections = [
        "<h2>Throughput vs p99</h2>",
        f'<div class="plot" id="throughput">{throughput_vs_p99(trials, best, limits)}</div>',
        "<h2>Memory per configuration</h2>",
        f'<div class="plot" id="memory">{memory_per_configuration(trials, best, limits)}</div>',
    ]
    stack, coupled = outcome.best_by_architecture.get("stack"), outcome.best_by_architecture.get("coupled")
    if stack is not None and coupled is not None:
        sections += [
            "<h2>Coupled vs decoupled</h2>",
            f'<div class="plot" id="coupled">{coupled_vs_decoupled(stack, coupled)}</div>',
            f"<p>Best stack / best coupled within the limits: "
            f"<b>{stack.rps / max(coupled.rps, 1e-9):.2f}x</b> "
            f"the requests/s, {stack.peak_pss_bytes / max(coupled.peak_pss_bytes, 1):.2f}x the memory.</p>",
        ]
    chosen = (
        f"<p class='chosen'>Chosen: <b>{html.escape(best.config.label)}</b>: {best.rps:.1f} requests/s "
        f"at {best.concurrency or '?'} requests in flight, p99 {best.p99_ms:.1f} ms, "
        f"{best.peak_pss_bytes / MIB:.0f} MiB</p>"
        if best is not None
        else "<p class='chosen'>No configuration respected the limits: nothing was chosen.</p>"
    )
    if outcome.interrupted:
        chosen += "<p class='chosen'>The search was interrupted: this is what was measured until then.</p>"
    misses = nearest_misses(outcome.nearest_misses, limits)
    rows = "\n".join(_row(i, t, best) for i, t in enumerate(trials, 1))
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>modelserve tune report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
tr.chosen {{ background: #ffe8c2; }} tr.over {{ color: #999; }}
.plot svg {{ max-width: 100%; height: auto; }}
.chosen {{ font-size: 1.1em; }}
</style></head><body>
<h1>modelserve tune</h1>
{chosen}
<table class="summary">{facts}</table>
{misses}
{"".join(sections)}
<h2>Every trial</h2>
<table class="trials"><tr><th>#</th><th>phase</th><th>configuration</th><th>concurrency</th><th>req/s</th>
<th>p50 ms</th><th>p99 ms</th><th>errors</th><th>peak PSS MiB</th><th>measured s</th><th>load generator</th>
<th>verdict</th></tr>
{rows}
</table></body></html>
"""


def _row(index: int, trial: TrialResult, best: TrialResult | None) -> str:
    chosen = best is not None and trial.config == best.config
    verdict = (
        trial.failure
        or ("fits" if trial.fits else ", ".join(
            name for name, ok in (("memory", trial.fits_memory), ("SLO/errors", trial.fits_slo)) if not ok
        ) + " over")
    )  # fmt: skip
    css = "chosen" if chosen else ("" if trial.fits else "over")
    return (
        f"<tr class='{css}'><td>{index}</td><td>{trial.phase}</td><td>{html.escape(trial.config.label)}</td>"
        f"<td>{trial.concurrency or '-'}</td><td>{trial.rps:.1f}</td><td>{trial.p50_ms:.1f}</td>"
        f"<td>{trial.p99_ms:.1f}</td><td>{trial.errors}</td><td>{trial.peak_pss_bytes / MIB:.0f}</td>"
        f"<td>{trial.measured_s:.1f}</td>"
        f"<td>{'SATURATED (req/s is a lower bound)' if trial.saturated else 'ok'}</td>"
        f"<td>{html.escape(verdict)}</td></tr>"
    )


def write_report(
    path: Path, outcome: SearchOutcome, limits: Limits, summary: Sequence[tuple[str, str]] = ()
) -> Path:
    """Write the report of ``outcome`` to ``path``."""
    path.write_text(render(outcome, limits, summary))
    return path
