"""Figure steps: each takes the dataclass of a data step and returns a plotly ``Figure``.

Nothing here reads a study; everything drawn was computed (and tested) in the data steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from rs_search.reports.complexity import ComplexityData, Correlation
from rs_search.reports.curves import LearningData, ProposalsData
from rs_search.reports.front import HypervolumeData, ParetoData
from rs_search.reports.scaling import DIMENSIONS, ScalingData

PALETTE = qualitative.Plotly + qualitative.D3
_LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 70, "b": 50}}


def _no_data(
    fig: go.Figure, message: str, *, row: int | None = None, col: int | None = None
) -> None:
    """A visible note where a panel has nothing to draw yet (instead of an empty frame)."""
    xref, yref = "paper", "paper"
    if row is not None and col is not None:
        axis = fig.get_subplot(row, col)
        xref = axis.xaxis.plotly_name.replace("axis", "") + " domain"
        yref = axis.yaxis.plotly_name.replace("axis", "") + " domain"
    fig.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref=xref,
        yref=yref,
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
                    legendgroup=name,
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
                    legendgroup="staircase",
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


def scaling_figure(data: ScalingData) -> go.Figure:
    budgets = data.budgets or (0,)
    titles = [f"by {dim}, {b} epochs" for dim in DIMENSIONS for b in budgets]
    fig = make_subplots(
        rows=len(DIMENSIONS),
        cols=len(budgets),
        subplot_titles=titles,
        vertical_spacing=0.08,
        horizontal_spacing=0.06,
    )
    for row, dimension in enumerate(DIMENSIONS, start=1):
        groups = sorted(
            {ln.group for ln in data.lines if ln.dimension == dimension},
            key=lambda g: [ln.group for ln in data.lines].index(g),
        )
        colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
        shown: set[str] = set()
        for col, budget in enumerate(budgets, start=1):
            for line in data.lines_for(dimension, budget):
                name = f"depth {line.group}" if dimension == "depth" else line.group
                first = line.group not in shown
                shown.add(line.group)
                fig.add_trace(
                    go.Scatter(
                        x=list(line.x),
                        y=list(line.top1),
                        mode="lines+markers",
                        name=name,
                        legendgroup=f"{dimension}:{line.group}",
                        showlegend=first,
                        legendgrouptitle_text=dimension if first and len(shown) == 1 else None,
                        line={"color": colour[line.group]},
                        customdata=list(line.numbers),
                        hovertemplate=f"{name}, {budget} ep<br>trial #%{{customdata}}<br>"
                        "%{x:.4g}: %{y:.2f}%<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
            fig.update_xaxes(
                title_text=data.x_label if row == len(DIMENSIONS) else None, row=row, col=col
            )
        fig.update_yaxes(title_text="val top-1 (%)", row=row, col=1)
    if not data.lines:
        _no_data(fig, "no completed trials yet")
    fig.update_layout(
        title=f"Scaling curves: top-1 against {data.x_label}, by training budget",
        height=300 * len(DIMENSIONS) + 80,
        **_LAYOUT,
    )
    return fig


def learning_figure(data: LearningData) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("top-1: train (dashed) and val (solid)", "train/val gap (points)"),
    )
    for i, curve in enumerate(data.curves):
        colour = PALETTE[i % len(PALETTE)]
        name = curve.label + (" ★" if curve.on_front else "")
        epochs = list(curve.epochs)
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=list(curve.val_top1),
                mode="lines",
                name=name,
                legendgroup=name,
                line={"color": colour},
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
                line={"color": colour, "dash": "dash"},
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
                line={"color": colour},
            ),
            row=1,
            col=2,
        )
    if not data.curves:
        _no_data(fig, "no trial has reported an epoch yet")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="top-1 (%)", row=1, col=1)
    fig.update_yaxes(title_text="train − val (points)", row=1, col=2)
    fig.update_layout(title="Learning curves (★ = on the Pareto front)", height=440, **_LAYOUT)
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
