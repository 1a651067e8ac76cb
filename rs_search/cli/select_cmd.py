"""``rs-search propose`` and ``rs-search scale``: the paper's scaling rules applied to a study.

Thin: open the study, call ``rs_search.search.proposals`` / ``rs_search.selection``, print.
Heavy imports happen inside the commands so that ``rs-search --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rs_search.cli._common import HELP_STORAGE

if TYPE_CHECKING:
    from rs_search.selection.scaling import Cost, Proposal


StudyName = Annotated[str, typer.Option("--study", help="Study name.", show_default=False)]
Storage = Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)]
Measure = Annotated[
    bool,
    typer.Option(
        "--measure",
        help="Measure latency on this machine when the cache has no figure for the "
        "study's target (else it is predicted from the source trial).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``propose`` and ``scale`` to ``app``."""
    app.command("propose")(propose)
    app.command("scale")(scale)


def _summary(proposal: Proposal) -> str:
    return proposal.candidate.arch.short_label


def _latency(cost: Cost | None) -> str:
    if cost is None or cost.latency_ms is None:
        return "?"
    return f"{cost.latency_ms:.3g}"


def _source(cost: Cost | None) -> str:
    if cost is None:
        return ""
    return cost.source.split(":")[0].split(",")[0]


def propose(
    study: StudyName,
    storage: Storage = None,
    n: Annotated[
        int,
        typer.Option(
            "--n",
            help="How many proposals (one per Pareto-front trial, "
            "best hypervolume contribution first).",
            min=1,
        ),
    ] = 1,
    enqueue: Annotated[
        bool,
        typer.Option(
            "--enqueue",
            help="Add them to the study as waiting "
            "trials tagged origin=rule:<name> and their reason.",
        ),
    ] = False,
    measure: Measure = False,
) -> None:
    """Propose the next candidates by the paper's scaling rules (depth where the curves overfit
    or the budget is long, width otherwise; resolution one step at most, with depth; the
    published regularization for the size) and print each with its reason."""
    from rs_search.cli._common import console, print_table
    from rs_search.env import Environment
    from rs_search.search.proposals import enqueue_proposals, propose_for_study
    from rs_search.study.read import settings_of
    from rs_search.study.storage import open_study

    environment = Environment.from_environ()
    opened = open_study(study, storage, retry_seconds=environment.storage_retry_s)
    try:
        settings = settings_of(opened.study)
        result = propose_for_study(
            opened.study, settings, n=n, storage=opened.storage.engine, measure=measure
        )
        queued = enqueue_proposals(opened.study, settings, result.proposals) if enqueue else []
    finally:
        opened.close()
    if not result.proposals:
        console.print(f"no proposal for study {study!r}", soft_wrap=True, markup=False)
    else:
        rows = []
        for i, p in enumerate(result.proposals, 1):
            space_note = ""
            try:
                outside = settings.search_space().violations(p.candidate)
            except Exception:  # noqa: BLE001 - a display detail only
                outside = []
            if outside:
                space_note = " (outside the space)"
            rows.append(
                (
                    i,
                    p.rule,
                    p.source_trial,
                    _summary(p) + space_note,
                    _latency(p.cost),
                    _source(p.cost),
                )
            )
        print_table(
            "proposals",
            ["#", "rule", "from trial", "candidate", "latency ms", "latency"],
            rows,
            right=["#", "from trial", "latency ms"],
        )
        for i, p in enumerate(result.proposals, 1):
            console.print(f"{i}. {p.reason}", soft_wrap=True, markup=False)
            if p.cost is not None and p.cost.source:
                console.print(f"   cost: {p.cost.source}", soft_wrap=True, markup=False)
    for d in result.dropped:
        console.print(
            f"dropped ({d.proposal.rule} from trial {d.proposal.source_trial}, "
            f"{_summary(d.proposal)}): {d.reason}",
            soft_wrap=True,
            markup=False,
        )
    for s in result.skipped[:10]:
        console.print(f"skipped: {s}", soft_wrap=True, markup=False)
    if len(result.skipped) > 10:
        console.print(
            f"skipped: ... and {len(result.skipped) - 10} more", soft_wrap=True, markup=False
        )
    for e in queued:
        where = f"trial {e.trial_number}" if e.trial_number is not None else "-"
        console.print(
            f"enqueued {e.proposal.origin} as {where}: {e.how}", soft_wrap=True, markup=False
        )


def scale(
    study: StudyName,
    trial: Annotated[
        int, typer.Option("--trial", help="Number of the trial to scale.", show_default=False)
    ],
    storage: Storage = None,
    steps: Annotated[int, typer.Option("--steps", help="How many scaled configs.", min=1)] = 3,
    rule: Annotated[
        str,
        typer.Option(
            "--rule",
            help="depth (the published family's way: "
            "depth, then resolution with it), width, or auto (read "
            "the trial's curve and the budget).",
        ),
    ] = "depth",
    measure: Measure = False,
) -> None:
    """Grow one trial into a scaled family (the way RS-50 grows to RS-420): STEPS configs with
    growing depth and slowly growing resolution, each with its latency on the study's target."""
    from rs_search.cli._common import console, print_table
    from rs_search.env import Environment
    from rs_search.errors import RsSearchError
    from rs_search.search.proposals import StudyCosts, train_images_of
    from rs_search.selection.scaling import RuleSettings, TrialView, scaled_family
    from rs_search.study.read import settings_of, study_records
    from rs_search.study.storage import open_study

    if rule not in ("depth", "width", "auto"):
        raise RsSearchError(f"--rule {rule!r}; allowed: depth, width, auto")
    environment = Environment.from_environ()
    opened = open_study(study, storage, retry_seconds=environment.storage_retry_s)
    try:
        settings = settings_of(opened.study)
        records = study_records(opened.study, settings.objectives)
        if not 0 <= trial < len(records):
            raise RsSearchError(
                f"study {study!r} has no trial {trial} (trials 0..{len(records) - 1})"
            )
        record = records[trial]
        view = TrialView.from_record(
            record,
            budget=settings.budget_epochs,
            objectives=settings.objectives,
            train_images=train_images_of(settings) if rule == "auto" else None,
        )
        if view is None:
            raise RsSearchError(f"trial {trial} has no candidate (state {record.state})")
        if record.state != "COMPLETE":
            console.print(
                f"note: trial {trial} is {record.state}; scaling its candidate",
                soft_wrap=True,
                markup=False,
            )
        family, stopped = scaled_family(
            view,
            steps,
            rule=rule,  # type: ignore[arg-type]
            settings=RuleSettings(),
        )
        costs = StudyCosts.for_study(
            opened.study,
            settings,
            [record],
            [view],
            storage=opened.storage.engine,
            measure=measure,
        )
        try:
            priced = [(p, costs(p)) for p in family]
        finally:
            costs.close()
    finally:
        opened.close()
    from rs_search.models.complexity import count_flops, count_params

    base = view.candidate.arch
    rows: list[tuple[object, ...]] = [
        (
            0,
            base.label,
            f"{base.width:g}",
            base.resolution,
            f"{count_params(base) / 1e6:.2f}",
            f"{count_flops(base) / 1e9:.3g}",
            "?" if record.values is None else _num(record.values.get("latency")),
            f"trial {trial}",
        )
    ]
    limit = settings.constraints.get("max_latency_ms")
    for i, (p, cost) in enumerate(priced, 1):
        arch = p.candidate.arch
        over = (
            " (over max_latency_ms)"
            if limit is not None and cost.latency_ms is not None and cost.latency_ms > limit
            else ""
        )
        rows.append(
            (
                i,
                arch.label,
                f"{arch.width:g}",
                arch.resolution,
                f"{(cost.params_m or 0):.2f}",
                f"{count_flops(arch) / 1e9:.3g}",
                _latency(cost) + over,
                _source(cost),
            )
        )
    target = settings.target.get("name", "target")
    print_table(
        f"scaled family of trial {trial} ({rule} rule) on {target}",
        ["step", "depth", "width", "res", "params M", "GFLOPs", "latency ms", "latency"],
        rows,
        right=["step", "res", "params M", "GFLOPs", "latency ms"],
    )
    for i, (p, cost) in enumerate(priced, 1):
        console.print(f"{i}. {p.reason}", soft_wrap=True, markup=False)
        console.print(
            f"   recipe: dropout {p.candidate.recipe.dropout:g}, stochastic depth "
            f"{p.candidate.recipe.stochastic_depth:g}, RandAugment magnitude "
            f"{p.candidate.recipe.randaug_magnitude}, weight decay "
            f"{p.candidate.recipe.weight_decay:g}; latency: {cost.source}",
            soft_wrap=True,
            markup=False,
        )
    if stopped:
        console.print(stopped, soft_wrap=True, markup=False)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"
