"""``rs-search train``: train one candidate file with the ResNet-RS recipe.

Thin: parse the flags, call :func:`rs_search.train.launch.run_local` (one process) or
:func:`~rs_search.train.launch.launch_group` (``--nproc N``: a torchrun group), report. Errors
are ``RsSearchError`` and leave through ``rs_search.cli.main`` as one line and an exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rs_search.errors import RsSearchError, TrialInterrupted

if TYPE_CHECKING:
    from rs_search.train.engine import RunOptions


class _GroupFailed(RsSearchError):
    """A torchrun worker failed; carries that worker's exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""

    @app.command("train")
    def train_command(
        config: Annotated[Path, typer.Option("--config", help="Candidate YAML (arch + recipe).")],
        data: Annotated[
            str,
            typer.Option(
                "--data",
                help="digits | imagefolder:PATH (PATH/train, PATH/val) | cifar10:PATH | "
                "cifar100:PATH | synthetic[:CLASSES]",
            ),
        ] = "digits",
        device: Annotated[
            str,
            typer.Option(
                "--device",
                help="auto | cpu | cuda | cuda:INDEX (with --nproc: cuda, rank r on cuda:r).",
            ),
        ] = "auto",
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Output folder (checkpoints, metrics.json); default runs/<config>-<key>.",
            ),
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from the last checkpoint.")
        ] = False,
        nproc: Annotated[int, typer.Option("--nproc", help="Processes (torchrun DDP group).")] = 1,
        epochs: Annotated[
            int | None, typer.Option("--epochs", help="Override recipe.epochs.")
        ] = None,
        seed: Annotated[
            int, typer.Option("--seed", help="Seed of weights, data order, augmentation.")
        ] = 0,
        num_workers: Annotated[
            int | None, typer.Option("--num-workers", help="DataLoader workers per process.")
        ] = None,
        micro_batch: Annotated[
            int | None,
            typer.Option(
                "--micro-batch",
                help="Images per forward/backward pass on each device; gradients accumulate to "
                "the recipe's batch (for a batch that does not fit).",
            ),
        ] = None,
        no_progress: Annotated[
            bool, typer.Option("--no-progress", help="No progress display.")
        ] = False,
    ) -> None:
        """Train one candidate: a progress bar per epoch, a checkpoint every epoch, metrics.json,
        a summary line. NaN loss exits 3, out-of-memory 4, bad input 2."""
        from rs_search.devices import parse_device
        from rs_search.train.data import parse_data_spec
        from rs_search.train.engine import RunOptions
        from rs_search.train.launch import (
            configure_logging,
            launch_group,
            load_candidate,
            run_local,
        )

        configure_logging()
        parse_data_spec(data)  # an unknown spec fails here, before any process starts
        spec = parse_device(device)
        if nproc > 1 and spec.index is not None:
            raise RsSearchError(
                f"--device {device} with --nproc {nproc}: every process would use GPU "
                f"{spec.index}; use --device cuda (process r takes cuda:r)"
            )
        options = RunOptions(
            data=data,
            device=device,
            out_dir=out,
            resume=resume,
            seed=seed,
            num_workers=num_workers,
            micro_batch=micro_batch,
            progress=not no_progress,
        )
        if nproc == 1:
            try:
                run_local(config, options, epochs=epochs)
            except TrialInterrupted as exc:
                typer.echo(f"interrupted: {exc}; continue with --resume", err=True)
            return
        load_candidate(config, epochs=epochs)  # a bad config fails here, before any process starts
        code, message = launch_group(nproc, _worker_args(config, options, epochs))
        if code == 0:
            return
        if message is None:
            message = f"a training process exited with status {code}"
        raise _GroupFailed(message, code)


def _worker_args(config: Path, options: RunOptions, epochs: int | None) -> list[str]:
    """``python -m rs_search.train`` arguments that repeat ``options`` for every rank."""
    args = ["--config", str(config), "--data", options.data, "--device", options.device]
    args += ["--seed", str(options.seed)]
    if options.out_dir is not None:
        args += ["--out", str(options.out_dir)]
    if options.resume:
        args.append("--resume")
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if options.num_workers is not None:
        args += ["--num-workers", str(options.num_workers)]
    if options.micro_batch is not None:
        args += ["--micro-batch", str(options.micro_batch)]
    if not options.progress:
        args.append("--no-progress")
    return args
