"""``rs-search space check|sample``: read a search-space file, show it, sample a candidate."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rs_search.cli._common import (
    console,
    err_console,
    fmt_flops,
    fmt_millions,
    print_table,
    write_atomic,
)
from rs_search.space import SearchSpace, load_space
from rs_search.specs import ArchSpec

space_app = typer.Typer(
    name="space",
    help="Inspect search-space files (YAML) and sample candidates from them.",
    no_args_is_help=True,
)

SpaceFile = Annotated[
    Path,
    typer.Argument(help="Search-space YAML file, e.g. spaces/quickstart.yaml.", show_default=False),
]


def register(app: typer.Typer) -> None:
    """Add the ``space`` command group to ``app``."""
    app.add_typer(space_app)


@space_app.command("check")
def check(
    file: SpaceFile,
    complexity: Annotated[
        bool,
        typer.Option(
            "--complexity/--no-complexity",
            help="Count parameters and FLOPs of the smallest and largest architectures "
            "(meta device, a few seconds for the paper's space).",
        ),
    ] = True,
) -> None:
    """Validate a space file and show its parameters, architectures and cost range.

    Prints every parameter with its domain and, where the file's sources: section gives it,
    where its values come from; the number of distinct architectures, the range of parameters
    and FLOPs the space spans, objectives, constraints, target hardware and seeds.
    A bad file exits with status 2 and one line naming the file, the key path and what is allowed.

    Example: rs-search space check spaces/quickstart.yaml
    """
    space = load_space(file)
    _print_header(space)
    _print_params(space)
    _print_sources(space)
    _print_architectures(space, complexity=complexity)
    _print_study_settings(space)


@space_app.command("sample")
def sample(
    file: SpaceFile,
    budget: Annotated[
        str,
        typer.Option(
            help="Training length of the candidate, with its unit: 350epochs, 12ep.",
            show_default=False,
        ),
    ],
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the random sampler; the same seed gives the same candidate. "
            "Default: a fresh random seed, printed in the output."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the candidate YAML here (atomically) instead of to stdout.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Sample one candidate from a space file and write it as YAML.

    Uses Optuna's random sampler. The YAML has top-level arch: and recipe: mappings, the format
    that train --config and export use; epochs come from --budget.

    Example: rs-search space sample spaces/quickstart.yaml --budget 12epochs --seed 0 --out c.yaml
    """
    import optuna

    from rs_search.budget import parse_budget

    epochs = parse_budget(budget).epochs
    space = load_space(file)
    seed = secrets.randbelow(2**31) if seed is None else seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=seed), directions=space.directions
    )
    candidate = space.sample(study.ask(), epochs=epochs)
    text = (
        f"# sampled from {file} (space {space.fingerprint()})"
        f" with --seed {seed} --budget {epochs}epochs\n" + candidate.to_yaml()
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    write_atomic(out, text)
    arch = candidate.arch
    err_console.print(
        f"wrote {out}: depth {arch.label}, width {arch.width:g}, {arch.resolution} px "
        f"(candidate {candidate.key()})",
        markup=False,
    )


# -- check output ------------------------------------------------------------------------------


def _print_header(space: SearchSpace) -> None:
    # Text from the file is printed escaped: "[red]" in a description is not markup.
    name = f" ({escape(space.name)})" if space.name else ""
    console.print(
        f"[bold]{escape(space.source)}[/bold]{name}: valid, fingerprint {space.fingerprint()}"
    )
    if space.description:
        console.print(escape(space.description))


def _print_params(space: SearchSpace) -> None:
    rows = []
    for p in space.params:
        count = p.domain.cardinality()
        rows.append((p.name, p.domain.describe(), "continuous" if count is None else count))
    print_table(
        "Parameters (Optuna names; epochs come from --budget)",
        ("parameter", "domain", "values"),
        rows,
        right=("values",),
    )


def _print_sources(space: SearchSpace) -> None:
    cited = [p for p in space.params if p.source]
    if not cited:
        return
    console.print("Sources (where each parameter's values come from):")
    for p in cited:
        console.print(f"  {p.name}: {escape(p.source or '')}")
    missing = [p.name for p in space.searched_params() if not p.source]
    if missing:
        console.print(f"  no source given for: {', '.join(missing)}")


def _print_architectures(space: SearchSpace, *, complexity: bool) -> None:
    distinct = space.distinct_architectures()
    factors = " x ".join(str(p.domain.cardinality()) for p in space.architecture if p.searched)
    if distinct is None:
        console.print("Architectures: continuous (a float range without step)")
    else:
        console.print(f"Architectures: {distinct} distinct" + (f" ({factors})" if factors else ""))
    if complexity:
        _print_complexity(space)


def _print_complexity(space: SearchSpace) -> None:
    from rs_search.models.complexity import count_flops, count_params

    small, large = space.extreme_architectures()
    with err_console.status("counting parameters and FLOPs of the extreme architectures..."):
        params = [count_params(a) for a in small + large]
        flops = [count_flops(a) for a in small + large]
    archs = small + large
    lo_p, hi_p = (
        min(range(len(archs)), key=params.__getitem__),
        max(range(len(archs)), key=params.__getitem__),
    )
    lo_f, hi_f = (
        min(range(len(archs)), key=flops.__getitem__),
        max(range(len(archs)), key=flops.__getitem__),
    )
    console.print(
        f"Parameters: {fmt_millions(params[lo_p])} M ({_arch_words(archs[lo_p])}) .. "
        f"{fmt_millions(params[hi_p])} M ({_arch_words(archs[hi_p])})"
    )
    console.print(
        f"FLOPs: {fmt_flops(flops[lo_f])} ({_arch_words(archs[lo_f])}) .. "
        f"{fmt_flops(flops[hi_f])} ({_arch_words(archs[hi_f])})"
    )
    console.print(
        f"  (counted on the {len(archs)} extreme architecture(s), not the whole grid: both grow "
        "monotonically with width, resolution, SE ratio, stem width, classes, channels and "
        "the blocks of each stage. FLOPs: one image, forward, 2 x multiply-adds.)"
    )
    limit = space.constraints.max_params_m
    if limit is not None and params[lo_p] / 1e6 > limit:
        console.print(
            "[yellow]warning:[/yellow] every architecture has more than "
            f"max_params_m = {limit:g} M "
            "parameters; no candidate can satisfy the constraint"
        )


def _arch_words(arch: ArchSpec) -> str:
    resnet_d = "" if arch.resnet_d else ", ResNet-D off"
    return f"depth {arch.label}, width {arch.width:g}, {arch.resolution} px{resnet_d}"


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print_study_settings(space: SearchSpace) -> None:
    objectives = ", ".join(f"{o.name} ({o.direction}, {o.unit})" for o in space.objectives)
    console.print(f"Objectives: {objectives}")
    limits = space.constraints.to_dict()
    console.print(
        "Constraints: " + (", ".join(f"{k} = {v:g}" for k, v in limits.items()) or "none")
    )
    from rich.markup import escape

    t = space.target
    console.print(
        f"Target: {escape(t.name)}: {t.mode.replace('_', ' ')}, {t.device}, batch {t.batch_size}, "
        f"{t.dtype}, "
        f"{'channels_last' if t.channels_last else 'contiguous'}, "
        f"{'compiled' if t.compile else 'eager'}, "
        f"threads {t.threads if t.threads is not None else 'default'}"
        + (f", on {escape(t.device_name)}" if t.device_name else "")
    )
    if not space.seeds:
        console.print("Seeds: none")
        return
    console.print(f"Seeds ({len(space.seeds)}, evaluated first; their searched values):")
    for s in space.seeds:
        values = ", ".join(
            f"{k.split('.', 1)[1]} {_num(v)}" for k, v in space.seed_params(s).items()
        )
        console.print(f"  {escape(s.name)}: {values}")
