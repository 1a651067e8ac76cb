"""``rs-search models``: the published ResNet-RS family as a table.

Each column says where its figure comes from: top-1 is published (the official README); the
parameters and GFLOPs are the reference file's counts (``../shared/reference/resnet_rs.yaml``:
counted from the official architecture, not published by the official code; see
``rs_search.models.family``), and ``--count`` adds ours from rs-search's builder.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rs_search.cli._common import fmt_giga, fmt_millions, print_table

# ImageNet top-1 (%) of each published variant, (name, resolution) -> top-1. Source: the official
# README table (tensorflow/tpu models/official/resnet/resnet_rs/README.md), copied in
# ../shared/reference/resnet_rs.yaml `models.*.variants[].top1`.
PUBLISHED_TOP1: dict[tuple[str, int], float] = {
    ("resnetrs50", 160): 78.8,
    ("resnetrs101", 160): 80.3,
    ("resnetrs101", 192): 81.2,
    ("resnetrs152", 192): 82.0,
    ("resnetrs152", 224): 82.2,
    ("resnetrs152", 256): 83.0,
    ("resnetrs200", 256): 83.4,
    ("resnetrs270", 256): 83.8,
    ("resnetrs350", 256): 84.0,
    ("resnetrs350", 320): 84.2,
    ("resnetrs420", 320): 84.4,
}


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""
    app.command("models")(models)


def models(
    count: Annotated[
        bool,
        typer.Option(
            "--count",
            help="Also count parameters and FLOPs with rs-search's own builder (meta device; "
            "about half a minute for the whole family) next to the reference counts.",
        ),
    ] = False,
) -> None:
    """Show the published ResNet-RS family: layouts, parameters, FLOPs, top-1.

    One row per published variant (Bello et al. 2021): block layout, parameters and GFLOPs with
    1000 classes at each published resolution (reference counts: 2 x multiply-adds, counted from
    the official architecture; the official code publishes neither), and the published ImageNet
    top-1 (official tensorflow/tpu README).
    """
    from rs_search.models import FAMILY, family_arch

    columns = ["model", "layout", "ref params (M)", "px", "ref GFLOPs", "published top-1 (%)"]
    if count:
        columns += ["ours: params (M)", "ours: GFLOPs"]
    rows: list[list[object]] = []
    for member in FAMILY.values():
        for i, resolution in enumerate(member.resolutions):
            top1 = PUBLISHED_TOP1.get((member.name, resolution))
            row: list[object] = [
                member.name if i == 0 else "",
                "-".join(map(str, member.layout)) if i == 0 else "",
                f"{member.params_m:.2f}" if i == 0 else "",
                resolution,
                f"{member.flops_g[resolution]:g}",
                "" if top1 is None else f"{top1:.1f}",
            ]
            if count:
                row += _counted(family_arch(member.name, resolution), first=i == 0)
            rows.append(row)
    print_table(
        "ResNet-RS family, 1000 classes. Published: layout, px, top-1 (official tensorflow/tpu "
        "README). ref: counted from the official architecture, not published (GFLOPs = 2 x "
        "multiply-adds)" + ("; ours: counted with rs-search's builder" if count else ""),
        columns,
        rows,
        right=[c for c in columns if c not in ("model", "layout")],
    )


def _counted(arch: object, *, first: bool) -> list[object]:
    from rs_search.models.complexity import count_flops, count_params
    from rs_search.specs import ArchSpec

    assert isinstance(arch, ArchSpec)
    return [fmt_millions(count_params(arch)) if first else "", fmt_giga(count_flops(arch))]
