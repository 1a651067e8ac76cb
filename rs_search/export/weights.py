"""A trial's final checkpoint: where the search keeps it and which weights it evaluates with.

The search trains trial ``N`` into ``<artifacts>/<study>/trial-<origin>`` (``search.artifacts``;
``origin`` is ``N`` or, for a retry, the trial it retries) and the engine writes
``ckpt-EEEE-SSSSSS.pt`` files there (``train.checkpoint``). The final checkpoint is the newest
one at an epoch boundary. Evaluation uses the EMA of the weights when the recipe has one
(Bello et al. 2021, Sec. 4; DESIGN.md section 1), so those are the weights ONNX export uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from rs_search.study.record import TrialRecord

__all__ = ["eval_state_dict", "final_checkpoint", "trial_checkpoint_dir"]


def trial_checkpoint_dir(trial: TrialRecord, *, study_name: str, artifacts: str) -> Path:
    from rs_search.search.artifacts import CheckpointStore

    return CheckpointStore.from_spec(artifacts).trial_dir(study_name, trial.retry_origin)


def final_checkpoint(folder: Path, *, epochs: int | None = None) -> Path | None:
    """The newest checkpoint in ``folder`` taken at an epoch boundary (and at ``epochs`` when
    given: a trial's last epoch), or None."""
    from rs_search.train.checkpoint import checkpoint_paths

    for path in checkpoint_paths(folder):
        _, epoch, step = path.stem.split("-")
        if int(step) == 0 and (epochs is None or int(epoch) == epochs):
            return path
    return None


def eval_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights evaluation used: the EMA's (``module.`` prefix of ``AveragedModel`` removed)
    when the checkpoint has one, else the raw model's."""
    ema = state.get("ema")
    if isinstance(ema, Mapping):
        return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
    model = state.get("model")
    if not isinstance(model, Mapping):
        raise ValueError("checkpoint has neither 'ema' nor 'model' weights")
    return dict(model)
