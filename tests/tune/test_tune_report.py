"""The HTML report: self-contained SVG plots, and it renders in headless Chromium (screenshot not blank)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from tune_fakes import LIMITS, sample_outcome, sample_trials

from modelserve.tune.report import write_report
from modelserve.tune.search import SearchOutcome


def test_the_report_holds_the_plots_the_limits_and_every_trial(tmp_path: Path) -> None:
    outcome = sample_outcome()
    trials = outcome.trials
    report = write_report(tmp_path / "report.html", outcome, LIMITS, [("memory budget", "900 MiB")])
    text = report.read_text()
    assert text.count("<svg") == 3  # throughput vs p99, memory, coupled vs decoupled
    for anchor in ('id="throughput"', 'id="memory"', 'id="coupled"', "p99 SLO 40 ms", "memory budget"):
        assert anchor in text
    assert "chosen: stack/grpc gthread x4 static-32-2ms" in text
    assert text.count("<tr class=") == len(trials)
    assert text.count("SATURATED") == 1  # the asyncio trial's load generator was the limit
    # The comparison shows each architecture's best as the search defined it (398 req/s, not 402).
    assert "Best stack / best coupled within the limits: <b>4.42x</b>" in text
    assert "<script" not in text and 'src="http' not in text and 'href="http' not in text  # self-contained


def test_without_the_coupled_architecture_there_is_no_comparison(tmp_path: Path) -> None:
    trials = [t for t in sample_trials() if t.config.architecture == "stack"]
    missed = replace(trials[2], p99_ms=48.0)
    outcome = SearchOutcome(best=None, trials=trials, elapsed_s=1.0, nearest_misses=[missed])
    text = write_report(tmp_path / "report.html", outcome, LIMITS).read_text()
    assert text.count("<svg") == 2 and "No configuration respected the limits" in text
    assert "Nearest misses" in text and "p99 48.0 ms &gt; 40 ms" in text


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    from PIL import Image

    report = write_report(tmp_path / "report.html", sample_outcome(), LIMITS)
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={screenshot}",
         "--window-size=1200,1600", f"--user-data-dir={tmp_path / 'profile'}", report.resolve().as_uri()],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 200  # text, axes and coloured markers, not a blank page
    pixels = {tuple(colour) for _, colour in colours if isinstance(colour, tuple)}
    # The plots' colours are on the page: the stack's blue and the chosen point's orange.
    assert any(abs(r - 0x1F) < 30 and abs(g - 0x77) < 30 and b > 0x90 for r, g, b in pixels)
    assert any(r > 0xE0 and 0x80 < g < 0xB0 and b < 0x50 for r, g, b in pixels)
