"""Where and how a latency figure is taken: the device, torch's backend settings, compilation.

Each setting here changes what is timed, so a figure must not inherit it from whatever ran
before in the process (a training step, another architecture):

- **the device** is an argument (``measuring_device``): a search worker on ``cuda:3`` measures on
  ``cuda:3``, not on the current device (GPU 0 before training calls ``set_device``, where worker
  0 trains; issue 14). CUDA work runs under ``torch.cuda.device(device)`` so that implicit
  allocations (cuDNN handles, compiled kernels) land there too;
- **threads** (CPU): the profile's count, restored afterwards;
- **cuDNN autotuning** (CUDA): on while timing; the shape is fixed, so a deployment lets cuDNN
  pick its fastest algorithm during the warm-up, as inference servers do;
- **TF32** (CUDA, fp32 profiles): off while timing. torch's default lets cuDNN convolutions use
  TF32 (``torch.backends.cudnn.allow_tf32`` is True), so an "fp32" figure on an Ampere or later
  GPU would be a TF32 figure; the paper's V100 column is float32;
- **torch.compile** (compile profiles): Dynamo's caches are reset before each architecture
  (``compile_fresh``). Every ResNet-RS shares one ``forward`` code object, so without a reset
  later architectures reuse guards, dynamic-shape graphs or, past the recompile limit (8),
  run eager while recorded as compiled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from rs_search.devices import parse_device
from rs_search.errors import RsSearchError
from rs_search.latency.profiles import HardwareProfile


def measuring_device(profile: HardwareProfile, worker_device: str, *, has_cuda: bool) -> str | None:
    """The device a search worker whose training device is ``worker_device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:<i>``) measures ``profile`` on, or None when it cannot here.

    CPU profiles: ``cpu``. CUDA profiles: the worker's own GPU (``cuda:<i>``; ``cuda`` and
    ``auto`` mean the current one); None on a machine without CUDA and for a worker told to
    train on the CPU (it must not time on a GPU other workers may be training on)."""
    spec = parse_device(worker_device, where="device")
    if profile.device_type == "cpu":
        return "cpu"
    if not has_cuda or spec.type == "cpu":
        return None
    return "cuda" if spec.type == "auto" else str(spec)


def resolve_device(profile: HardwareProfile, device: str) -> torch.device:
    """``device`` as a torch device, checked against ``profile`` and this machine.

    Its type must be the profile's; ``cuda`` without an index is the current CUDA device. A
    device this machine does not have is the caller's mistake (``RsSearchError``)."""
    dev = torch.device(str(parse_device(device, where="device", allow_auto=False)))
    if dev.type != profile.device_type:
        raise RsSearchError(
            f"hardware profile {profile.name!r} measures on {profile.device_type}, "
            f"not on {device!r}"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RsSearchError(
                f"hardware profile {profile.name!r} needs CUDA, which this machine does "
                "not have; run the measurement (or a latency worker) on that hardware"
            )
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise RsSearchError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        dev = torch.device("cuda", index)
    return dev


@contextmanager
def timing_backends(profile: HardwareProfile, device: torch.device) -> Iterator[int | None]:
    """Backend settings while ``profile`` is timed on ``device`` (module docstring), restored
    afterwards. Yields the CPU thread count in force (None on CUDA)."""
    with ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
            stack.enter_context(cuda_flags(profile))
            yield None
        else:
            yield stack.enter_context(_threads(profile.threads))


@contextmanager
def cuda_flags(profile: HardwareProfile) -> Iterator[None]:
    """cuDNN autotuning on, and for an fp32 profile no TF32 (module docstring); restored after.
    The flags are process-wide and need no GPU to set, so this is tested on a CPU."""
    with ExitStack() as stack:
        stack.enter_context(_cudnn_flags(benchmark=True))
        if profile.dtype == "fp32":
            stack.enter_context(exact_fp32())
        yield


@contextmanager
def exact_fp32() -> Iterator[None]:
    """No TF32 in fp32 matmuls and cuDNN convolutions (the legacy flags: torch 2.14 raises on
    reading them after a mix of the legacy and the per-operator APIs)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextmanager
def _cudnn_flags(*, benchmark: bool) -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def compile_fresh(model: nn.Module, *, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)`` after resetting Dynamo, so this architecture is compiled on its
    own, as a deployment compiles it (module docstring). ``backend``: Dynamo's backend name
    (``inductor``, torch's default; tests use ``eager``, which compiles in a second)."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled: nn.Module = torch.compile(model, backend=backend)  # type: ignore[assignment]
    return compiled


def free(device: torch.device) -> None:
    """Give back what a measurement left: Python garbage first, then CUDA's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
