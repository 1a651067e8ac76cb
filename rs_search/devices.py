"""Device strings, parsed in one place: ``--device`` flags, a hardware profile's ``device``.

Grammar: ``auto`` (flags only: CUDA when this machine has it, else the CPU), ``cpu``, ``cuda``
(the current or the rank's own GPU) and ``cuda:INDEX``, exactly so (lower case). Parsing is
pure and imports no torch (``rs-search --help`` and the space parser use it); :func:`resolve`
and :func:`worker_devices` ask torch what this machine has.

Before this module the same grammar was written four times (the engine, the search launcher, the
hardware profile and the space's ``target``), each with its own checks and messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICE_HELP",
    "DeviceSpec",
    "allowed",
    "is_device",
    "parse_device",
    "resolve",
    "worker_devices",
]

DEVICE_HELP = "auto | cpu | cuda | cuda:INDEX"
_PATTERN = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")

DeviceType = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """A parsed device string; ``index`` is set only for ``cuda:INDEX``."""

    type: DeviceType
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def allowed(*, allow_auto: bool = True) -> str:
    """The allowed values, for error messages."""
    return ("auto, " if allow_auto else "") + "cpu, cuda, cuda:<index>"


def _match(text: str, allow_auto: bool) -> DeviceSpec | None:
    if not isinstance(text, str):
        return None
    found = _PATTERN.fullmatch(text)
    if found is None or (found.group(2) is not None and found.group(1) != "cuda"):
        return None
    kind = found.group(1)
    if kind == "auto" and not allow_auto:
        return None
    index = int(found.group(2)) if found.group(2) is not None else None
    return DeviceSpec(type=kind, index=index)  # type: ignore[arg-type]


def is_device(text: object, *, allow_auto: bool = True) -> bool:
    """Whether ``text`` is a device string (for callers that raise their own error type)."""
    return isinstance(text, str) and _match(text, allow_auto) is not None


def parse_device(text: str, *, where: str = "--device", allow_auto: bool = True) -> DeviceSpec:
    """``text`` parsed; anything else is one ``RsSearchError`` line naming ``where``."""
    spec = _match(text, allow_auto)
    if spec is None:
        raise RsSearchError(
            f"{where} {text!r}: unknown device; allowed: {allowed(allow_auto=allow_auto)}"
        )
    return spec


def resolve(text: str | DeviceSpec, *, local_rank: int = 0, local_ranks: int = 1) -> torch.device:
    """The torch device this process trains on.

    ``auto`` is CUDA when available, else the CPU. ``cuda`` in a group of ``local_ranks``
    processes on this machine is ``cuda:LOCAL_RANK`` (one GPU per rank, torchrun's convention).
    ``cuda:INDEX`` with several local ranks is refused: every rank would share one GPU. A CUDA
    device this machine lacks is refused too. All refusals are one line (exit status 2).
    """
    import torch

    spec = text if isinstance(text, DeviceSpec) else parse_device(text)
    kind = spec.type
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if spec.index is not None and local_ranks > 1:
        raise RsSearchError(
            f"--device {spec}: {local_ranks} processes on this machine would all use GPU "
            f"{spec.index}; use --device cuda (rank r takes cuda:r) or one process"
        )
    if not torch.cuda.is_available():
        raise RsSearchError(
            f"device {str(spec)!r}: CUDA is not available on this machine; use --device cpu"
        )
    index = local_rank if spec.index is None else spec.index
    count = torch.cuda.device_count()
    if index >= count:
        raise RsSearchError(f"device {str(spec)!r}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def worker_devices(text: str, workers: int | None) -> tuple[str, ...]:
    """One device per local search worker: an explicit ``cuda:i`` or ``cpu`` for all of them;
    ``auto``/``cuda`` spreads the workers over the visible GPUs (one each by default), else one
    CPU worker."""
    if workers is not None and workers < 1:
        raise RsSearchError(f"--workers {workers}: must be at least 1")
    spec = parse_device(text)
    import torch

    gpus = torch.cuda.device_count() if spec.type != "cpu" and spec.index is None else 0
    if spec.type == "cuda" and spec.index is None and gpus == 0:
        raise RsSearchError("--device cuda: no CUDA device is visible")
    if spec.type == "cuda" and spec.index is not None:
        visible = torch.cuda.device_count()
        if spec.index >= visible:
            raise RsSearchError(
                f"--device {spec}: no such CUDA device ({visible} visible"
                + (f": cuda:0 to cuda:{visible - 1})" if visible else ")")
            )
    if gpus:
        return tuple(f"cuda:{i % gpus}" for i in range(workers or gpus))
    return tuple([str(spec) if spec.type != "auto" else "cpu"] * (workers or 1))
