"""``rs-search report`` end to end: a study on real PostgreSQL, the real CLI, the HTML opened in
headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it). Under CI a missing Chromium
fails the run; on a laptop without one these tests skip with the reason.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.reports.browser import Browser, find_chromium
from tests.reports.factory import cache_latency, demo_study, small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SPACE = Path(__file__).parent / "data" / "small_grid.yaml"
FIGURES = ("pareto", "hypervolume", "complexity", "scaling", "learning", "fidelity", "proposals")

# Every plotly div: its traces, the points those traces carry and whether plotly drew its SVG.
PLOTS = """
(() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
  id: d.id,
  traces: (d.data || []).length,
  points: (d.data || []).reduce((n, t) =>
      n + ((t.x || (t.cells && t.cells.values && t.cells.values[0]) || []).length), 0),
  drawn: !!d._fullLayout && d.querySelectorAll('.main-svg').length > 0,
  marks: d.querySelectorAll('.scatterlayer .point, .scatterlayer .js-line, .table .cell-text')
      .length,
})))()
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "Chromium not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(message)
    return path


def rs_search(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rs_search.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# Resolves, in the page, once COUNT plots are drawn (a MutationObserver sees plotly add their SVG),
# or with what there is after MS milliseconds: the browser waits on the event, the test does not
# poll.
PLOTS_DRAWN = """
new Promise(resolve => {
  const plots = () => PLOTS;
  const drawn = () => { const p = plots(); return p.length >= COUNT && p.every(x => x.drawn); };
  if (drawn()) { resolve(plots()); return; }
  const observer = new MutationObserver(() => { if (drawn()) done(); });
  const timer = setTimeout(() => done(), MS);
  function done() { observer.disconnect(); clearTimeout(timer); resolve(plots()); }
  observer.observe(document.body, {childList: true, subtree: true, attributes: true});
})
"""


def wait_for_plots(browser: Browser, count: int, timeout: float = 60.0) -> list[dict[str, object]]:
    script = (
        PLOTS_DRAWN.replace("PLOTS", PLOTS.strip())
        .replace("COUNT", str(count))
        .replace("MS", str(int(timeout * 1000)))
    )
    return list(browser.evaluate(script, timeout=timeout + 30))


def test_error_detection_is_not_blind(chromium: str, tmp_path: Path) -> None:
    """The console check below means something only if it sees errors when there are some."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>console.error('boom-1');"
        "setTimeout(() => { throw new Error('boom-2'); }, 0);</script></body></html>"
    )
    with Browser(chromium) as browser:
        browser.open(page.as_uri())
        browser.wait_event("Runtime.exceptionThrown", consume=False)  # boom-2, thrown later
        errors = browser.errors()
    assert any("boom-1" in e for e in errors), errors
    assert any("boom-2" in e for e in errors), errors


@pytest.mark.slow
def test_report_of_a_study_opens_offline_in_chromium(
    postgres_url: str, chromium: str, tmp_path: Path
) -> None:
    demo_study(postgres_url, name="browser-demo")
    # A latency worker on other hardware measured two of the architectures.
    cache_latency(
        postgres_url,
        {small_arch((1, 1, 1, 1), 0.25, 32): 0.9, small_arch((2, 2, 2, 2), 0.25, 32): 0.5},
        profile="cuda-fp16-b1",
    )
    out = tmp_path / "reports" / "demo.html"
    png_dir = tmp_path / "png"
    result = rs_search(
        "report",
        "--study",
        "browser-demo",
        "--storage",
        postgres_url,
        "--out",
        str(out),
        "--png",
        str(png_dir),
    )
    assert result.returncode == 0, result.stderr
    assert f"report: {out}" in result.stdout and "7 figures" in result.stdout
    assert "password" not in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.html"]  # no temporary left
    html = out.read_text()
    assert "<script src=" not in html  # plotly.js is inlined, not fetched
    for key in FIGURES:
        width, height = png_size(png_dir / f"{key}.png")
        assert width == 1200 and height >= 150

    with Browser(chromium) as browser:
        browser.open(out.as_uri())
        plots = wait_for_plots(browser, len(FIGURES))
        errors = browser.errors()
        requests = browser.requests()
        ARTIFACTS.mkdir(exist_ok=True)
        shot = browser.screenshot(ARTIFACTS / "report.png")
        title = browser.evaluate("document.querySelector('h1').textContent")
        panels = browser.evaluate(
            "document.getElementById('fig-pareto').layout.annotations.map(a => a.text)"
        )

    assert [p["id"] for p in plots] == [f"fig-{key}" for key in FIGURES]
    for plot in plots:
        assert plot["drawn"], plot
        assert plot["traces"] and plot["points"] and plot["marks"], plot
    assert errors == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
    assert title == "Study browser-demo"
    assert panels == ["target: cpu-fp32-b8", "target: cuda-fp16-b1"]  # one per hardware
    assert shot.stat().st_size > 50_000
    width, height = png_size(shot)
    assert width == 1400 and height > 3000  # the whole page, every figure


def test_png_without_chromium_says_how_to_get_one(postgres_url: str, tmp_path: Path) -> None:
    demo_study(postgres_url, name="no-browser")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BROWSER_PATH"}
    env["PATH"] = str(empty)
    out = tmp_path / "r.html"
    result = rs_search(
        "report",
        "--study",
        "no-browser",
        "--storage",
        postgres_url,
        "--out",
        str(out),
        "--png",
        str(tmp_path / "png"),
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install chromium" in lines[0], result.stderr
    assert out.exists()  # the HTML report is written all the same
    assert not (tmp_path / "png").exists()


def test_unknown_study_is_one_line(postgres_url: str, tmp_path: Path) -> None:
    demo_study(postgres_url, name="present")
    result = rs_search(
        "report", "--study", "absent", "--storage", postgres_url, "--out", str(tmp_path / "r.html")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: study 'absent' not found in {postgres_url}; studies there: present"
    )
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_report_of_a_real_search_opens_in_chromium(
    postgres_url: str, chromium: str, tmp_path: Path
) -> None:
    """A real search (rs-search start: two seeds and one sampled trial, trained), one proposal of
    the scaling rules enqueued by rs-search propose, then the report in a browser."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = rs_search(
        "start",
        "--no-auto-scale",  # the rules are not what this tests
        "--space",
        str(SPACE),
        "--budget",
        "2epochs",
        "--trials",
        "3",
        "--study",
        "real",
        "--storage",
        postgres_url,
        "--workers",
        "1",
        "--device",
        "cpu",
        "--data",
        "synthetic:10",
        "--seed",
        "0",
        "--no-halving",
        "--loader-workers",
        "0",
        "--artifacts",
        str(tmp_path / "art"),
        env=env,
        timeout=900,
    )
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    propose = rs_search(
        "propose", "--study", "real", "--storage", postgres_url, "--n", "1", "--enqueue", env=env
    )
    assert propose.returncode == 0, propose.stderr
    out = tmp_path / "real.html"
    report = rs_search(
        "report", "--study", "real", "--storage", postgres_url, "--out", str(out), env=env
    )
    assert report.returncode == 0, report.stderr

    with Browser(chromium) as browser:
        browser.open(out.as_uri())
        plots = wait_for_plots(browser, len(FIGURES))
        errors = browser.errors()
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "report-real-search.png")
        reasons = browser.evaluate(
            "document.getElementById('fig-proposals').data[0].cells.values[4]"
        )
        fidelity_notes = browser.evaluate(
            "document.getElementById('fig-fidelity').layout.annotations.map(a => a.text)"
        )
    assert errors == []
    assert [p["id"] for p in plots] == [f"fig-{key}" for key in FIGURES]
    for plot in plots:
        if plot["id"] == "fig-fidelity":  # --no-halving: no rung to check, and it says so
            assert plot["drawn"] and not plot["points"], plot
            assert "no rung recorded: halving off, or no trial reached a rung" in fidelity_notes
            continue
        assert plot["drawn"] and plot["traces"] and plot["points"] and plot["marks"], plot
    # The rule depends on the trained curve (train/val gap): either is a proposal with a reason.
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(("width 0.25→0.5:", "depth 1-1-1-1→2-2-2-2:")), reasons
