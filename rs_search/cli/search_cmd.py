"""``rs-search start`` and ``rs-search worker``: run a search and join it from any machine.

Thin: parse, call ``rs_search.search``, print. Every input problem is an ``RsSearchError`` that
``main`` turns into one line and exit status 2 before anything is created.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rs_search.cli._common import HELP_STORAGE, console, err_console, print_table

if TYPE_CHECKING:
    from rs_search.search.launch import StartPlan
    from rs_search.search.summary import RuleOutcome

AutoScale = Annotated[
    bool,
    typer.Option(
        "--auto-scale/--no-auto-scale",
        help="After each trial from the sampler, enqueue one candidate proposed by the "
        "paper's scaling rules (see rs-search propose).",
    ),
]
StartAutoScale = Annotated[
    bool,
    typer.Option(
        "--auto-scale/--no-auto-scale",
        help="The paper's scaling rules in the search (on by default): after each trial from "
        "the sampler, a candidate they propose (depth where the trial overfits or the regime "
        "is long, else width) takes the next trial slot; the closing summary shows what each "
        "proposed, why, and how it did.",
    ),
]
HELP_DEVICE = "auto (one worker per visible GPU, else the CPU), cpu, cuda or cuda:<index>."


def register(app: typer.Typer) -> None:
    """Add ``start`` and ``worker`` to ``app``."""
    app.command("start")(start)
    app.command("worker")(worker)


def _quiet_optuna() -> None:
    """Our own lines report progress; Optuna's INFO logs and experimental-API warnings
    (heartbeats, the retry callback) would only interleave with them."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def start(
    space: Annotated[
        Path,
        typer.Option(
            "--space", show_default=False, help="Search-space YAML, e.g. spaces/quickstart.yaml."
        ),
    ],
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            help="Full training length of one trial, with its unit: 350epochs, 12epochs.",
            show_default=False,
        ),
    ],
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Study name (default: "
            "<space name>-<budget>). An existing study with the "
            "same settings is resumed.",
        ),
    ] = None,
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="digits, synthetic[:CLASSES], imagefolder:PATH, cifar10:PATH, cifar100:PATH.",
        ),
    ] = "digits",
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help="Trial budget of the study (seeds "
            "included). Default: run until stopped or timed "
            "out.",
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help="Start no new trial after this long: 90s, 30m, 2h, 1h30m."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Local worker processes (default: one per visible GPU, else one). 0: this "
            "machine trains nothing; it creates the study, prints the command that joins it from "
            "other machines, and shows the search's progress until the budget is spent.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help=HELP_DEVICE)] = "auto",
    sampler: Annotated[str, typer.Option("--sampler", help="tpe, nsga2, gp or random.")] = "tpe",
    eta: Annotated[
        int,
        typer.Option(
            "--eta",
            help="Successive halving: keep the top 1/eta of the "
            "trials at each rung (rungs at budget/eta^k epochs).",
        ),
    ] = 3,
    min_rung: Annotated[
        int | None,
        typer.Option(
            "--min-rung",
            help="Lowest rung in epochs "
            "(default: budget/eta^3, at least 1 and past "
            "the LR warm-up).",
        ),
    ] = None,
    halving: Annotated[
        bool,
        typer.Option(
            "--halving/--no-halving", help="Pareto-aware successive halving of unpromising trials."
        ),
    ] = True,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Sampler seed of the local workers "
            "(worker k uses seed+k; with one worker the "
            "candidate sequence is reproducible).",
        ),
    ] = None,
    artifacts: Annotated[
        str,
        typer.Option(
            "--artifacts",
            help="Checkpoint directory (shared between machines for cross-machine resume).",
        ),
    ] = "rs-search-artifacts",
    heartbeat: Annotated[
        int,
        typer.Option(
            "--heartbeat",
            help="Seconds between a running trial's heartbeats (under ~10 s is fragile).",
        ),
    ] = 30,
    grace: Annotated[
        int,
        typer.Option(
            "--grace", help="Seconds without a heartbeat before a trial is failed and retried."
        ),
    ] = 120,
    loader_workers: Annotated[
        int | None,
        typer.Option(
            "--loader-workers",
            help="DataLoader processes per worker (default: the engine's choice).",
        ),
    ] = None,
    auto_scale: StartAutoScale = True,
) -> None:
    """Create (or resume) a study, print the compute estimate, run local workers, show progress,
    and print the Pareto front with the commands that export and report it."""
    from contextlib import ExitStack

    from rs_search.cli.progress import Progress, progress
    from rs_search.env import Environment
    from rs_search.search import launch, summary
    from rs_search.search.local import tail

    _quiet_optuna()
    environment = Environment.from_environ()
    plan = launch.plan_start(
        space_file=space,
        budget=budget,
        study_name=study,
        storage=storage,
        data=data,
        trials=trials,
        timeout=timeout,
        workers=workers,
        device=device,
        sampler=sampler,
        eta=eta if halving else None,
        min_rung=min_rung,
        seed=seed,
        artifacts=artifacts,
        heartbeat=heartbeat,
        grace=grace,
        loader_workers=loader_workers,
        auto_scale=auto_scale,
    )
    settings = plan.settings
    shown_name = escape(plan.study_name)
    bars: list[Progress] = []
    with ExitStack() as stack:

        def started(event: launch.SearchStarted) -> None:
            verb = "created" if event.created else "resumed"
            console.print(
                f"study [bold]{shown_name}[/] {verb} in {escape(plan.storage_shown)} "
                f"({event.seeds} seeds and {event.slots} trials queued)",
                soft_wrap=True,
            )
            if event.spent:
                console.print(
                    "the trial budget is spent: nothing left to run (raise --trials to go on)"
                )
            else:
                console.print(
                    "[bold]estimate[/]: "
                    + (
                        escape("; ".join(event.estimate.lines()))
                        if event.estimate is not None
                        else f"open-ended (no --trials): {settings.budget_epochs} epochs per "
                        "full trial"
                    )
                )
                if plan.workers:
                    console.print(
                        f"running {plan.workers} worker(s) on {', '.join(plan.devices)}; logs in "
                        f"{escape(str(event.log_dir))}",
                        soft_wrap=True,
                    )
                else:
                    _print_head_node(plan)
            # A bar on a terminal; on a log or pipe one plain line at most every 10 s (and the
            # last one).
            bars.append(
                stack.enter_context(
                    progress(f"search {plan.study_name}", total=settings.n_trials, unit="trials")
                )
            )

        def polled(event: launch.SearchProgress) -> None:
            p, best = event.progress, event.front
            bars[0].update(
                completed=p.complete + p.pruned + p.failed,
                complete=p.complete,
                pruned=p.pruned,
                failed=p.failed,
                running=p.running,
                epochs=p.epochs,
                front=len(best),
                best_top1=round(best[0].top1, 2) if best and best[0].top1 is not None else None,
            )

        outcome = launch.run_search(
            plan, environment=environment, on_start=started, on_progress=polled
        )
    if outcome.stopped is not None:
        console.print(
            f"stopped watching ({outcome.stopped}); the workers on other machines go on"
            if plan.workers == 0
            else f"stopped ({outcome.stopped}) before the workers started",
            markup=False,
        )
    rows = summary.front_rows(outcome.records, settings)
    if rows:
        print_table(
            f"Pareto front of {plan.study_name} ({len(rows)} trials)",
            summary.front_columns(settings),
            rows,
            right=("trial", "top-1 %", "latency ms", "memory MB", "params M", "epochs"),
        )
    else:
        console.print("no trained, feasible trial yet: the front is empty")
    _print_rules(summary.rule_outcomes(outcome.records, settings), auto_scale=plan.auto_scale)
    console.print(outcome.progress.line(), markup=False)
    console.print("next:")
    for cmd in launch.next_commands(plan):
        console.print(f"  {cmd}", soft_wrap=True, markup=False)
    bad = [(k, c) for k, c in enumerate(outcome.exit_codes) if c != 0]
    for k, code in bad:
        log = outcome.logs[k]
        err_console.print(
            f"worker {k} exited with status {code}; last lines of {log}:", markup=False
        )
        for line in tail(log):
            err_console.print(f"  {line}", soft_wrap=True, markup=False)
    if bad:
        raise typer.Exit(1)


def _print_rules(outcomes: list[RuleOutcome], *, auto_scale: bool) -> None:
    """What each scaling-rule trial proposed, why, and how it did against its source trial;
    the paper's part and the project's heuristics once at the end. Reasons come from the
    study: printed without markup."""
    if not outcomes:
        if auto_scale:
            console.print(
                "scaling rules: no proposal ran (each worker's log says why after every trial)"
            )
        return
    console.print(
        f"scaling rules: {len(outcomes)} proposal(s) ran (--no-auto-scale turns them off)"
    )
    cited: list[str] = []
    for o in outcomes:
        source = f" from trial {o.source}" if o.source is not None else ""
        front = "; on the front" if o.on_front else ""
        console.print(
            f"  trial {o.number} {o.origin}{source}: {o.step} -> {o.result}{front}",
            soft_wrap=True,
            markup=False,
        )
        console.print(f"    why: {o.why}", soft_wrap=True, markup=False)
        cited.extend(c for c in o.citations if c not in cited)
    for citation in cited:
        console.print(f"  [{citation}]", soft_wrap=True, markup=False)


def _print_head_node(plan: StartPlan) -> None:
    """``--workers 0``: what to run on the machines that train."""
    from rs_search.search import launch

    until = "the trial budget is spent" if plan.settings.n_trials is not None else "Ctrl-C"
    if plan.timeout_s is not None:
        until += " or the --timeout passes"
    console.print(
        f"no local worker (--workers 0): watching until {until}; join from other machines with:"
    )
    console.print(f"  {launch.worker_command(plan)}", soft_wrap=True, markup=False)
    for note in launch.worker_notes(plan):
        console.print(f"  ({note})", soft_wrap=True, markup=False)


def worker(
    study: Annotated[
        str, typer.Option("--study", help="Name of the study to join.", show_default=False)
    ],
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:<index>.")
    ] = "auto",
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help="Train each trial as a torchrun DDP group "
            "of N processes (gloo on CPU, NCCL on GPU).",
        ),
    ] = 1,
    artifacts: Annotated[
        str | None, typer.Option("--artifacts", help="Checkpoint directory (default: the study's).")
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help="Start no new trial after this long: 90s, 30m, 2h."),
    ] = None,
    max_trials: Annotated[
        int | None, typer.Option("--max-trials", help="Leave after running this many trials.")
    ] = None,
    loader_workers: Annotated[
        int | None,
        typer.Option(
            "--loader-workers", help="DataLoader processes per rank (default: the engine's choice)."
        ),
    ] = None,
    auto_scale: AutoScale = False,
    worker_index: Annotated[
        int | None,
        typer.Option(
            "--worker-index",
            hidden=True,
            min=0,
            help="This worker's place among start's local workers (sampler seed = seed + index).",
        ),
    ] = None,
) -> None:
    """Join a study from any machine and run its trials until the trial budget is spent or the
    worker is stopped (SIGTERM checkpoints the running trial and hands it back; exit 0)."""
    from rs_search.env import Environment
    from rs_search.errors import RsSearchError
    from rs_search.latency.window import protocol_for
    from rs_search.search.launch import parse_duration
    from rs_search.study.storage import require_study

    _quiet_optuna()
    environment = Environment.from_environ()
    protocol_for(environment)  # a bad $RS_SEARCH_LATENCY_PROTOCOL: one line before anything runs
    timeout_s = parse_duration(timeout) if timeout is not None else None
    if nproc < 1:
        raise RsSearchError(f"--nproc {nproc}: must be at least 1")
    # unreachable storage / unknown study: one line, nothing created
    url = require_study(study, storage)
    if nproc > 1:
        from rs_search.search import ddp

        code = ddp.launch(
            nproc=nproc,
            study_name=study,
            storage_url=url.render_as_string(hide_password=False),
            device=device,
            artifacts=artifacts,
            timeout_s=timeout_s,
            loader_workers=loader_workers,
            max_trials=max_trials,
            auto_scale=auto_scale,
            worker_index=worker_index,
        )
        if code != 0:
            raise typer.Exit(code)
        return
    from rs_search.search.worker import run_worker

    report = run_worker(
        study_name=study,
        storage=url.render_as_string(hide_password=False),
        device=device,
        artifacts=artifacts,
        timeout_s=timeout_s,
        max_trials=max_trials,
        loader_workers=loader_workers,
        auto_scale=auto_scale,
        worker_index=worker_index,
        environment=environment,
        echo=lambda s: print(s, flush=True),
    )
    print(f"worker done: {report.reason}, {report.trials_run} trials run here", flush=True)
    sys.stdout.flush()
