"""Figure steps: each takes the dataclass of a data step and returns a plotly ``Figure``.

Nothing here reads a study; everything drawn was computed (and tested) in the data steps.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from rs_search.reports.complexity import ComplexityData, Correlation
from rs_search.reports.curves import LearningData, ProposalsData
from rs_search.reports.fidelity import MIN_TRUSTED_TAU, FidelityData, RungFidelity
from rs_search.reports.front import HypervolumeData, ParetoData
from rs_search.reports.scaling import DIMENSIONS, ScalingData

PALETTE = qualitative.Plotly + qualitative.D3
_LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 70, "b": 50}}


def _no_data(
    fig: go.Figure, message: str, *, row: int | None = None, col: int | None = None
) -> None:
    """A visible note where a panel has nothing to draw yet (instead of an empty frame)."""
    x, y = 0.5, 0.5
    if row is not None and col is not None:
        # The middle of the panel in page coordinates: an "x5 domain" reference to the axes of
        # a panel without traces is drawn in the first panel's data coordinates by plotly.js.
        axis = fig.get_subplot(row, col)
        x, y = (sum(axis.xaxis.domain) / 2, sum(axis.yaxis.domain) / 2)
    fig.add_annotation(
        text=message,
        x=x,
        y=y,
        xref="paper",
        yref="paper",
        xanchor="center",
        yanchor="middle",
        showarrow=False,
        font={"size": 14, "color": "#888"},
    )


def pareto_figure(data: ParetoData) -> go.Figure:
    titles = [f"target: {p.profile}" for p in data.panels] or ["target"]
    fig = make_subplots(rows=1, cols=max(1, len(data.panels)), subplot_titles=titles)
    for col, panel in enumerate(data.panels, start=1):
        show = col == 1
        front = panel.on_front
        groups = (
            (
                "dominated",
                [not f for f in front],
                {"color": "#9aa5b1", "opacity": 0.35, "size": 8, "symbol": "circle"},
            ),
            (
                "Pareto front (exported)",
                list(front),
                {"color": PALETTE[0], "opacity": 1.0, "size": 14, "symbol": "star"},
            ),
        )
        for name, mask, style in groups:
            idx = [i for i, keep in enumerate(mask) if keep]
            fig.add_trace(
                go.Scatter(
                    x=[panel.cost[i] for i in idx],
                    y=[panel.top1[i] for i in idx],
                    mode="markers",
                    name=name,
                    legendgroup="front" if name.startswith("Pareto") else name,
                    showlegend=show,
                    marker={
                        "color": style["color"],
                        "size": style["size"],
                        "opacity": style["opacity"],
                        "symbol": style["symbol"],
                        "line": {"width": 1, "color": "white"},
                    },
                    hovertext=[panel.hover[i] for i in idx],
                    hovertemplate="%{hovertext}<extra></extra>",
                    customdata=[panel.numbers[i] for i in idx],
                ),
                row=1,
                col=col,
            )
        if panel.front_cost:
            fig.add_trace(
                go.Scatter(
                    x=panel.front_cost,
                    y=panel.front_top1,
                    mode="lines",
                    line_shape="hv",
                    name=f"top-1/{panel.cost_words} front",
                    legendgroup="front",  # the front's own line: toggled with its stars
                    showlegend=show,
                    line={"color": PALETTE[0], "width": 1.5, "dash": "dot"},
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
        if not panel.numbers:
            _no_data(fig, "no completed feasible trials yet", row=1, col=col)
        fig.update_xaxes(title_text=panel.cost_label, row=1, col=col)
        fig.update_yaxes(title_text="val top-1 (%)", row=1, col=col)
    words = data.panels[0].cost_words if data.panels else "latency"
    fig.update_layout(title=f"Pareto front: top-1 against measured {words}", height=480, **_LAYOUT)
    return fig


def hypervolume_figure(data: HypervolumeData) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("against epochs trained", "against device-hours")
    )
    for col, xs in ((1, data.epochs), (2, data.device_hours)):
        fig.add_trace(
            go.Scatter(
                x=list(xs),
                y=list(data.hypervolume),
                mode="lines+markers",
                line_shape="hv",
                name="hypervolume",
                showlegend=False,
                marker={"color": PALETTE[0]},
                customdata=list(data.numbers),
                hovertemplate="after trial #%{customdata}<br>%{x:.4g}: HV %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if not data.numbers:
            _no_data(fig, "no finished trials yet", row=1, col=col)
    fig.update_xaxes(title_text="epochs trained (all trials)", row=1, col=1)
    fig.update_xaxes(title_text="device-hours (sum of epoch times)", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume", row=1, col=1)
    ref = ", ".join(f"{v:.4g}" for v in data.reference)
    fig.update_layout(
        title=f"Hypervolume against compute spent (reference point: {ref})", height=420, **_LAYOUT
    )
    return fig


def _corr_title(corr: Correlation) -> str:
    if corr.spearman is None:
        return f"{corr.x_label} vs {corr.y_label}"
    wrong = f", {corr.discordant:.0%} of pairs misordered" if corr.discordant is not None else ""
    return f"Spearman ρ = {corr.spearman:.2f}{wrong}"


def complexity_figure(data: ComplexityData) -> go.Figure:
    panels = (data.flops_latency, data.params_memory)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[_corr_title(c) for c in panels])
    for col, corr in enumerate(panels, start=1):
        fig.add_trace(
            go.Scatter(
                x=list(corr.x),
                y=list(corr.y),
                mode="markers",
                showlegend=False,
                marker={"color": PALETTE[col - 1], "size": 10},
                hovertext=list(corr.labels),
                hovertemplate="%{hovertext}<br>%{x:.3g} → %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if not corr.x:
            _no_data(
                fig, f"no {corr.y_label.removeprefix('measured ')} measurements yet", row=1, col=col
            )
        fig.update_xaxes(title_text=corr.x_label, row=1, col=col)
        fig.update_yaxes(title_text=corr.y_label, row=1, col=col)
    fig.update_layout(
        title="Proxies against measurements: FLOPs vs latency, parameters vs memory",
        height=440,
        **_LAYOUT,
    )
    return fig


#: Line dashes that tell legend entries apart once the palette's colours are used up.
DASHES = ("solid", "dash", "dot", "dashdot")


def line_styles(keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (colour, dash) per legend entry, never the same pair for two entries of one figure:
    colours first, then the dashes again with every colour."""
    colours = list(dict.fromkeys(PALETTE))  # the palettes share no colour, but keep it honest
    return {
        key: (colours[i % len(colours)], DASHES[(i // len(colours)) % len(DASHES)])
        for i, key in enumerate(keys)
    }


def scaling_legend_name(dimension: str, group: str) -> str:
    """``depth ↑ at w1 r160``: the dimension that scales along the line, then what it holds."""
    return f"{dimension} ↑ at {group}"


def scaling_figure(data: ScalingData) -> go.Figure:
    budgets = data.budgets or (0,)
    titles = [f"scaling {dim}, {b} epochs" for dim in DIMENSIONS for b in budgets]
    fig = make_subplots(
        rows=len(DIMENSIONS),
        cols=len(budgets),
        subplot_titles=titles,
        vertical_spacing=0.08,
        horizontal_spacing=0.06,
    )
    # One legend entry per (dimension, what it holds fixed), shared by its lines in every budget
    # column; its colour and dash are its own in the whole figure.
    names = list(dict.fromkeys(scaling_legend_name(ln.dimension, ln.group) for ln in data.lines))
    styles = line_styles(names)
    shown: set[str] = set()
    for row, dimension in enumerate(DIMENSIONS, start=1):
        for col, budget in enumerate(budgets, start=1):
            lines = data.lines_for(dimension, budget)
            for line in lines:
                name = scaling_legend_name(dimension, line.group)
                colour, dash = styles[name]
                fig.add_trace(
                    go.Scatter(
                        x=list(line.x),
                        y=list(line.top1),
                        mode="lines+markers+text",
                        name=name,
                        legendgroup=name,
                        showlegend=name not in shown,
                        line={"color": colour, "dash": dash},
                        marker={"color": colour},
                        text=list(line.steps),
                        textposition="top center",
                        textfont={"size": 9, "color": colour},
                        customdata=list(line.numbers),
                        hovertemplate=f"{name}, {budget} ep<br>%{{text}}: trial #%{{customdata}}"
                        "<br>%{x:.4g}: %{y:.2f}%<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
                shown.add(name)
            if data.lines and not lines:
                _no_data(fig, f"no two trials differ in {dimension} alone", row=row, col=col)
            fig.update_xaxes(
                title_text=data.x_label if row == len(DIMENSIONS) else None, row=row, col=col
            )
        fig.update_yaxes(title_text="val top-1 (%)", row=row, col=1)
    if not data.lines:
        _no_data(fig, "no two completed trials differ in one dimension alone yet")
    fig.update_layout(
        title=f"Scaling curves: top-1 against {data.x_label}, one dimension per line",
        height=300 * len(DIMENSIONS) + 80,
        legend={"title": {"text": "line: dimension ↑ at what it holds"}},
        **_LAYOUT,
    )
    return fig


def fallback_note(data: LearningData) -> str | None:
    """The panel's note when some trials lack train top-1 measured like validation."""
    if not data.fallbacks:
        return None
    numbers = ", ".join(f"#{c.number}" for c in data.fallbacks)
    return (
        f"{numbers}: no train top-1 measured like validation in the curve; dotted lines use "
        "the running top-1 over augmented batches (dropout on), so their gap understates "
        "overfitting"
    )


def learning_figure(data: LearningData) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "top-1: train, measured like val (dashed), and val (solid)",
            "train/val gap (points; train measured like val)",
        ),
    )
    for i, curve in enumerate(data.curves):
        colour = PALETTE[i % len(PALETTE)]
        name = curve.label + (" ★" if curve.on_front else "")
        fallback = curve.train_measure == "augmented"
        train_words = "train (augmented, running)" if fallback else "train (measured like val)"
        epochs = list(curve.epochs)
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=list(curve.val_top1),
                mode="lines",
                name=name,
                legendgroup=name,
                line={"color": colour},
                hovertemplate=f"{name}<br>epoch %{{x}}: val %{{y:.2f}}%<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=list(curve.train_top1),
                mode="lines",
                name=name,
                legendgroup=name,
                showlegend=False,
                line={"color": colour, "dash": "dot" if fallback else "dash"},
                hovertemplate=f"{name}<br>epoch %{{x}}: {train_words} %{{y:.2f}}%<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=list(curve.gap),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=False,
                line={"color": colour, "dash": "dot" if fallback else "solid"},
                hovertemplate=f"{name}<br>epoch %{{x}}: gap %{{y:.2f}} points ({train_words})"
                "<extra></extra>",
            ),
            row=1,
            col=2,
        )
    if not data.curves:
        _no_data(fig, "no trial has reported an epoch yet")
    if (note := fallback_note(data)) is not None:
        gap_panel = fig.get_subplot(1, 2)
        fig.add_annotation(
            text="<br>".join(textwrap.wrap(note, 60)),
            xanchor="center",
            x=sum(gap_panel.xaxis.domain) / 2,
            y=gap_panel.yaxis.domain[1],
            xref="paper",
            yref="paper",
            yanchor="top",
            showarrow=False,
            bgcolor="rgba(255,255,255,0.85)",
            font={"size": 11, "color": "#b00020"},
        )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="top-1 (%)", row=1, col=1)
    fig.update_yaxes(title_text="train − val (points)", row=1, col=2)
    fig.update_layout(title="Learning curves (★ = on the Pareto front)", height=460, **_LAYOUT)
    return fig


#: Rungs drawn as scatter panels beside the tau panel (more are listed in the tau panel only).
FIDELITY_SCATTERS = 3


def _rung_title(rung: RungFidelity) -> str:
    tau = f"{rung.tau:.2f}" if rung.tau is not None else "n/a"
    return f"{'⚠ ' if rung.warn else ''}rung epoch {rung.epoch}: τ {tau}, {rung.agreement.n} trials"


def fidelity_figure(data: FidelityData) -> go.Figure:
    """Kendall tau of each rung against the final top-1 (with the trust threshold, a project
    heuristic), then the trials behind the first rungs: top-1 at the rung against at the end."""
    scattered = data.rungs[:FIDELITY_SCATTERS]
    titles = ["Kendall τ: rung vs final top-1", *(_rung_title(r) for r in scattered)]
    fig = make_subplots(rows=1, cols=1 + len(scattered), subplot_titles=titles)
    epochs = [r.epoch for r in data.rungs]
    taus = [r.tau for r in data.rungs]
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=taus,
            mode="lines+markers+text",
            name="Kendall τ at the rung",
            text=[f"n={r.agreement.n}" for r in data.rungs],
            textposition="top center",
            marker={
                "color": ["#d62728" if r.warn else PALETTE[0] for r in data.rungs],
                "size": 11,
                "symbol": ["x" if r.warn else "circle" for r in data.rungs],
            },
            line={"color": PALETTE[0]},
            hovertemplate="rung epoch %{x}: τ %{y:.2f} (%{text})<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if epochs:
        fig.add_trace(
            go.Scatter(
                x=[min(epochs) - 0.5, max(epochs) + 0.5],
                y=[MIN_TRUSTED_TAU, MIN_TRUSTED_TAU],
                mode="lines",
                name=f"trust threshold τ = {MIN_TRUSTED_TAU:g} (project heuristic)",
                line={"color": "#7f7f7f", "dash": "dash"},
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    else:
        _no_data(fig, "no rung recorded: halving off, or no trial reached a rung", row=1, col=1)
    fig.update_xaxes(title_text="rung epoch", row=1, col=1)
    fig.update_yaxes(title_text="Kendall τ-b", range=[-1.1, 1.15], row=1, col=1)
    for col, rung in enumerate(scattered, start=2):
        fig.add_trace(
            go.Scatter(
                x=list(rung.at_rung),
                y=list(rung.final),
                mode="markers",
                showlegend=False,
                marker={"color": "#d62728" if rung.warn else PALETTE[2], "size": 9},
                customdata=list(rung.numbers),
                hovertemplate="trial #%{customdata}<br>rung %{x:.2f}% → final %{y:.2f}%"
                "<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if not rung.numbers:
            _no_data(fig, "no trial trained past this rung yet", row=1, col=col)
        fig.update_xaxes(title_text=f"val top-1 at epoch {rung.epoch} (%)", row=1, col=col)
        fig.update_yaxes(title_text="final val top-1 (%)", row=1, col=col)
    fig.update_layout(
        title="Fidelity: does each rung rank the trials as the full budget does?",
        height=420,
        **_LAYOUT,
    )
    return fig


def _fmt(values: Sequence[float | None], spec: str) -> list[str]:
    return [format(v, spec) if v is not None else "–" for v in values]


def proposals_figure(data: ProposalsData) -> go.Figure:
    rows = data.rows
    header = ["trial", "state", "rule", "from", "reason", "config", "top-1 (%)", "latency (ms)"]
    cells = [
        [f"#{r.number}" for r in rows],
        [r.state.lower() for r in rows],
        [r.rule for r in rows],
        [f"#{r.source_trial}" if r.source_trial is not None else "–" for r in rows],
        [r.reason for r in rows],
        [r.config for r in rows],
        _fmt([r.top1 for r in rows], ".2f"),
        _fmt([r.latency_ms for r in rows], ".3g"),
    ]
    fig = go.Figure(
        go.Table(
            columnwidth=[40, 60, 50, 40, 330, 110, 60, 70],
            header={"values": header, "fill_color": "#e8edf3", "align": "left"},
            cells={"values": cells, "align": "left"},
        )
    )
    if not rows:
        _no_data(fig, "the selector has not proposed any trial yet")
    fig.update_layout(
        title="Selector proposals and their reasons",
        height=min(900, 140 + 32 * max(1, len(rows))),
        **_LAYOUT,
    )
    return fig
