"""``torchrun --nproc_per_node=N -m rs_search.train --config FILE --data SPEC ...``

The worker entry point of a torchrun group (also runs as a single process without torchrun).
Each rank joins the group torchrun describes (gloo on CPU, NCCL on CUDA) and calls the engine;
rank 0 writes checkpoints and ``metrics.json`` and prints the summary. An ``RsSearchError`` is
one line on stderr (rank 0) and its exit status (2 bad input, 3 diverged, 4 out of memory), also
written to torchrun's per-worker error file so that ``rs-search train --nproc`` can report it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rs_search.devices import DEVICE_HELP
from rs_search.errors import RsSearchError, TrialInterrupted


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rs_search.train", description=__doc__.splitlines()[0]
    )
    p.add_argument("--config", type=Path, required=True, help="candidate YAML (arch + recipe)")
    p.add_argument(
        "--data",
        default="digits",
        help="digits | imagefolder:PATH | cifar10:PATH | cifar100:PATH | synthetic[:CLASSES]",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (checkpoints, metrics.json)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    p.add_argument("--epochs", type=int, default=None, help="override recipe.epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per process")
    p.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="images per pass on each device; gradients accumulate to the recipe's batch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    p.add_argument("--debug", action="store_true", help="full traceback on errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rs_search.train.distributed import init_from_env, leave_group
    from rs_search.train.engine import RunOptions
    from rs_search.train.launch import LAUNCHED_ENV, configure_logging, run_local, write_error_file

    configure_logging()
    rank = int(os.environ.get("RANK", "0"))
    try:
        init_from_env(args.device)
        options = RunOptions(
            data=args.data,
            device=args.device,
            out_dir=args.out,
            resume=args.resume,
            seed=args.seed,
            num_workers=args.num_workers,
            micro_batch=args.micro_batch,
            progress=not args.no_progress,
        )
        run_local(args.config, options, epochs=args.epochs)
        return 0
    except TrialInterrupted as exc:
        if rank == 0:
            print(f"interrupted: {exc}; continue with --resume", file=sys.stderr, flush=True)
        return exc.exit_code
    except RsSearchError as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        write_error_file(message)
        if rank == 0 and not os.environ.get(LAUNCHED_ENV):
            print(f"error: {message}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        leave_group()  # a no-op when no process group is up


if __name__ == "__main__":
    sys.exit(main())
