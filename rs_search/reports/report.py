"""The HTML report: every figure of the study in one self-contained file that opens offline.

plotly.js is inlined once in the page head (about 4.7 MB), so the file needs no network and no
server. ``rs-search report`` writes it to a temporary name beside the target and renames it into
place (``cli._common.write_atomic``), so a reader never sees half a report (DESIGN.md section 3,
"Errors": nothing half-written).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rs_search import __version__
from rs_search.reports import figures
from rs_search.reports.complexity import complexity_data
from rs_search.reports.curves import learning_data, proposals_data
from rs_search.reports.fidelity import (
    MIN_TRUSTED_TAU,
    fidelity_data,
    fidelity_line,
    no_rungs_line,
)
from rs_search.reports.front import cost_objective, hypervolume_data, pareto_data
from rs_search.reports.scaling import scaling_data
from rs_search.reports.source import cached_measurements
from rs_search.study.read import StudyInfo, StudySnapshot
from rs_search.study.record import OBJECTIVE_WORDS, TrialRecord

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from sqlalchemy.engine import URL


@dataclass(frozen=True, kw_only=True)
class Section:
    key: str  # file stem of the PNG and id of the figure's div
    title: str
    note: str  # one paragraph: what to read from the figure
    figure: go.Figure
    lines: tuple[str, ...] = ()  # findings printed under the note, one per line (a warning...)


def build_sections(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    *,
    other_profiles: Mapping[str, Mapping[str, float]] | None = None,
    memory_by_arch: Mapping[str, float] | None = None,
) -> list[Section]:
    """Data steps then figure steps, one section per figure, in reading order."""
    objectives = info.objectives
    words = "/".join(OBJECTIVE_WORDS.get(o, o) for o in objectives)
    return [
        Section(
            key="pareto",
            title="Pareto front",
            note="Each point is a completed, trained, feasible trial; faded points are "
            "dominated. Stars are the Pareto front, the configs rs-search export writes. "
            f"Top-1 is drawn against {OBJECTIVE_WORDS[cost_objective(objectives)]}. "
            "Hover for the full config.",
            figure=figures.pareto_figure(
                pareto_data(
                    records,
                    target=info.target,
                    other_profiles=other_profiles,
                    objectives=objectives,
                )
            ),
        ),
        Section(
            key="hypervolume",
            title="Hypervolume against compute",
            note=f"How much of the {words} space the front covers, after each finished "
            "trial, against the epochs and device-hours every trial (failed ones too) cost.",
            figure=figures.hypervolume_figure(hypervolume_data(records, objectives=objectives)),
        ),
        Section(
            key="complexity",
            title="FLOPs and parameters against measurements",
            note="Bello et al. (2021), Sec. 7.2: FLOPs do not predict latency and parameters do "
            "not predict memory. A rank correlation well below 1 means the proxy would pick "
            "the wrong model.",
            figure=figures.complexity_figure(
                complexity_data(records, memory_by_arch=memory_by_arch)
            ),
        ),
        Section(
            key="scaling",
            title="Scaling curves",
            note="Top-1 against FLOPs, one column per training budget. Each line scales one "
            "dimension (depth, width or resolution) with every other one held fixed, as in "
            "Bello et al. (2021), Fig. 3; each architecture with the best recipe found. Depth "
            "pays off in long training, width in short training.",
            figure=figures.scaling_figure(scaling_data(records, x_kind="flops")),
        ),
        _learning_section(records),
        _fidelity_section(records),
        Section(
            key="proposals",
            title="Selector proposals",
            note="Trials the selector enqueued from the paper's scaling rules, with its reason.",
            figure=figures.proposals_figure(proposals_data(records)),
        ),
    ]


def _learning_section(records: Sequence[TrialRecord]) -> Section:
    data = learning_data(records)
    note = figures.fallback_note(data)
    return Section(
        key="learning",
        title="Learning curves",
        note="Train top-1 measured like validation (eval mode, no augmentation, a fixed subset "
        "of the training split; dashed) and validation top-1 (solid), and their gap. A widening "
        "gap in long training is overfitting: where the paper scales depth rather than width "
        "(Bello et al. 2021, Sec. 7.1).",
        figure=figures.learning_figure(data),
        lines=() if note is None else (f"warning: {note}",),
    )


def _fidelity_section(records: Sequence[TrialRecord]) -> Section:
    data = fidelity_data(records)
    lines = [fidelity_line(r) for r in data.rungs] or [no_rungs_line()]
    return Section(
        key="fidelity",
        title="Fidelity of the rungs",
        note="Successive halving prunes on the ranking at a rung; Bello et al. (2021, Sec. 7) "
        "warn that short training ranks models differently from long training. Kendall's τ-b "
        "between top-1 at each rung and the final top-1, over the trials that trained past it "
        "(seeds and rule proposals always do). Below "
        f"{MIN_TRUSTED_TAU:g} (a project heuristic, not the paper's) halving there is not to "
        "be trusted.",
        figure=figures.fidelity_figure(data),
        lines=tuple(lines),
    )


def study_sections(
    snapshot: StudySnapshot, *, storage_url: URL | None = None
) -> tuple[StudyInfo, list[TrialRecord], list[Section]]:
    """Everything the report shows; with ``storage_url`` the latency cache of that database adds
    a Pareto panel per other hardware profile and memory figures trials lack."""
    records = list(snapshot.records)
    info = snapshot.info
    if storage_url is None:
        return info, records, build_sections(records, info)
    cached = cached_measurements(storage_url, target=info.target)
    sections = build_sections(
        records,
        info,
        other_profiles=cached.latency_by_profile,
        memory_by_arch=cached.memory_by_arch,
    )
    return info, records, sections


def render_html(
    info: StudyInfo, records: Sequence[TrialRecord], sections: Sequence[Section]
) -> str:
    import plotly.offline

    states = Counter(r.state for r in records)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    budget = (
        f"{info.budget_epochs} epochs per trial" if info.budget_epochs else "budget not recorded"
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = []
    for section in sections:
        div = section.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{section.key}",
            config={"displaylogo": False, "responsive": True},
        )
        findings = "".join(
            f'<li class="{"warn" if "warning" in line else "finding"}">{html.escape(line)}</li>'
            for line in section.lines
        )
        body.append(
            f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>'
            f"<p>{html.escape(section.note)}</p>"
            + (f'<ul class="findings">{findings}</ul>' if findings else "")
            + f"{div}</section>"
        )
    toc = " · ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>rs-search report: {html.escape(info.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 1em 2em; color: #222; }}
h1 {{ margin-bottom: .2em; }} section {{ margin: 2em 0; }} p {{ color: #555; max-width: 70em; }}
.meta {{ color: #666; }} nav a {{ color: #2a5db0; }} li.warn {{ color: #b00020; }}
</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head><body>
<h1>Study {html.escape(info.name)}</h1>
<p class="meta">Target hardware: {html.escape(info.target)} · {html.escape(budget)} ·
objectives: {html.escape(", ".join(info.objectives))} · trials: {html.escape(summary)} ·
generated {generated} by rs-search {__version__}</p>
<nav>{toc}</nav>
{"".join(body)}
</body></html>
"""
