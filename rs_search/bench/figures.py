"""The search-quality figure: hypervolume against compute, one line per method (plotly).

Data step first (``compare.hypervolume_curve``: median and interquartile range over seeds on an
even grid of compute shares), figure step second, as ``rs_search.reports`` does.
"""

from __future__ import annotations

import html
from typing import Any

from rs_search.bench.compare import FRACTIONS, Comparison, hypervolume_curve

__all__ = ["hypervolume_figure"]

# One colour per method, no colour twice (plotly's qualitative "Dark24" has enough for ours).
_COLOURS = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100",
    "#750D86", "#EB663B", "#511CFB", "#00A08B", "#FB00D1",
)  # fmt: skip


def hypervolume_figure(comparison: Comparison) -> Any:
    """Median hypervolume fraction of the table's true front against the share of the
    no-halving compute, with the interquartile range as a band; dotted verticals at
    ``FRACTIONS``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, method in enumerate(comparison.methods):
        colour = _COLOURS[i % len(_COLOURS)]
        xs, med, low, high = hypervolume_curve(comparison, method.name)
        name = html.escape(method.name)
        dash = "solid" if method.halving or method.engine != "rs-search" else "dash"
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=high + low[::-1],
                fill="toself",
                fillcolor=colour,
                opacity=0.12,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=med,
                mode="lines",
                name=f"{name} ({html.escape(method.describe())})",
                legendgroup=name,
                line={"color": colour, "dash": dash},
                hovertemplate=f"{name}<br>compute %{{x:.0%}}<br>median HV %{{y:.3f}}"
                "<extra></extra>",
            )
        )
    for f in FRACTIONS:
        fig.add_vline(x=f, line={"dash": "dot", "width": 1, "color": "#999"})
    header = comparison.table.header
    fig.update_layout(
        title=(
            f"Hypervolume vs compute on {html.escape(header.space.name or 'the table')} "
            f"({len(comparison.table.done)} candidates, {header.budget_epochs} epochs, "
            f"{html.escape(header.data)}); {len(comparison.seeds)} seeds, median and IQR"
        ),
        xaxis={
            "title": f"share of the no-halving compute ({comparison.compute} epochs = "
            f"{comparison.compute_trials} full trials)",
            "tickformat": ".0%",
            "range": [0, 1],
        },
        yaxis={"title": "hypervolume / true front's", "range": [0, 1.02]},
        legend={"title": "method (dashed: no halving)"},
        template="plotly_white",
    )
    return fig
