"""Hardware profiles: what latency and memory are measured on (DESIGN.md section 3, "Latency").

A profile fixes everything about the measurement that is not the architecture: what is timed
(``mode``: an inference pass, or a training step as in the paper's speed table), the device, the
batch size, the dtype, the memory format, ``torch.compile`` and the CPU thread count. A space
file's ``target`` section describes one (``HardwareProfile.from_dict``); ``--hardware NAME`` picks
a built-in one or the space's own (``get_profile``).

``key()`` hashes the settings only, not the name, so two names for the same settings share cache
rows; inference and training-step figures never do (the mode is hashed when it is not the
default, so the keys of inference profiles are those of earlier releases). The device *index* is
not part of the key either (``cuda:1`` and ``cuda`` measure the same way); which physical device
ran a measurement is recorded separately as ``device_name(device)`` (the CPU model and count, or
the GPU's name), because the same profile on another machine is another figure (Bello et al.
2021, scaling rule 3: measure on the hardware that will run it). A profile may name that
hardware (``device_name``): then only figures taken on a device of that name count for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from rs_search.devices import allowed, is_device, parse_device
from rs_search.errors import RsSearchError, SpecError

DTYPES: tuple[str, ...] = ("fp32", "bf16", "fp16")
# What one timed pass is: eval-mode forward ("inference"), or forward, backward and an SGD
# momentum step in train mode ("train_step": the paper's latency; tensorflow/tpu
# models/official/resnet/resnet_rs/README.md, "Benchmarking details").
MODES: tuple[str, ...] = ("inference", "train_step")


class UnknownProfileError(RsSearchError):
    """``--hardware`` named a profile that is neither built in nor defined by the space."""


@dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """How one latency/memory figure is taken. Field names match a space file's ``target``."""

    name: str
    mode: str = "inference"  # inference | train_step (see MODES)
    device: str = "cpu"  # cpu, cuda or cuda:<index>
    # Images per timed pass; latency is ms per batch. train_step: the first batch tried, halved
    # until a step fits (the paper's "initial training batch size of 128 images, which is
    # divided by 2 until it fits onto the accelerator").
    batch_size: int = 1
    dtype: str = "fp32"  # fp32, bf16 or fp16: weights and inputs are cast to it
    channels_last: bool = True  # NHWC: the fast convolution layout of oneDNN and cuDNN
    compile: bool = False  # torch.compile the model (compilation happens during warm-up)
    threads: int | None = None  # torch.set_num_threads for CPU runs; None: torch's default
    # The hardware the figures must come from, as ``device_name`` reports it ("NVIDIA H200",
    # "AMD EPYC (2 CPUs)"); None: the device this process measures on.
    device_name: str | None = None

    def __post_init__(self) -> None:
        _check(self.name, str, "name")
        if not self.name.strip():
            raise SpecError("target.name: must not be empty")
        _check(self.mode, str, "mode")
        if self.mode not in MODES:
            raise SpecError(f"target.mode: {self.mode!r}; allowed: {', '.join(MODES)}")
        _check(self.device, str, "device")
        if not is_device(self.device, allow_auto=False):
            raise SpecError(f"target.device: {self.device!r}; allowed: {allowed(allow_auto=False)}")
        _check(self.batch_size, int, "batch_size")
        if self.batch_size < 1:
            raise SpecError(f"target.batch_size: {self.batch_size} must be >= 1")
        _check(self.dtype, str, "dtype")
        if self.dtype not in DTYPES:
            raise SpecError(f"target.dtype: {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        _check(self.channels_last, bool, "channels_last")
        _check(self.compile, bool, "compile")
        if self.threads is not None:
            _check(self.threads, int, "threads")
            if self.threads < 1:
                raise SpecError(f"target.threads: {self.threads} must be >= 1")
        if self.device_name is not None:
            _check(self.device_name, str, "device_name")
            if not self.device_name.strip() or len(self.device_name) > 255:
                raise SpecError("target.device_name: expected 1 to 255 characters")

    @property
    def device_type(self) -> str:
        """``cpu`` or ``cuda`` (the index stripped)."""
        return parse_device(self.device, where="target.device", allow_auto=False).type

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "target") -> HardwareProfile:
        """A profile from a space's ``target`` section (or ``to_dict`` output).

        Missing keys take the built-in profile of the same name when there is one (so
        ``target: {name: cpu-fp32-b16}`` means the built-in), else the field defaults.
        Unknown keys and wrong types are a ``SpecError`` naming the key.
        """
        if hasattr(data, "to_dict") and not isinstance(data, Mapping):  # a space's TargetSpec
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(known)}")
        if "name" not in data:
            raise SpecError(f"{where}.name: missing; every hardware profile has a name")
        values = dict(data)
        base = BUILTIN_PROFILES.get(values["name"]) if isinstance(values["name"], str) else None
        try:
            if base is not None:
                return replace(base, **values)
            return cls(**values)
        except SpecError as exc:
            raise SpecError(str(exc).replace("target.", f"{where}.", 1)) from None

    def key(self) -> str:
        """Stable 16-hex-digit hash of the settings that change a measurement (not the name, not
        the device index, not ``device_name``: rows record the device they were taken on)."""
        payload: dict[str, Any] = {
            "device": self.device_type,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "threads": self.threads,
        }
        if self.mode != "inference":  # inference keys stay those of earlier releases
            payload["mode"] = self.mode
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for progress output: ``cpu-fp32-b1 (cpu, fp32, batch 1, NHWC, 2 threads)``."""
        batch = (
            f"training step at batch {self.batch_size} (halved until it fits)"
            if self.mode == "train_step"
            else f"batch {self.batch_size}"
        )
        parts = [self.device, self.dtype, batch, "NHWC" if self.channels_last else "NCHW"]
        if self.compile:
            parts.append("compiled")
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.device_name is not None:
            parts.append(f"on {self.device_name}")
        return f"{self.name} ({', '.join(parts)})"


def _check(value: Any, expected: type, key: str) -> None:
    # bool is an int subclass: a YAML ``true`` is not a batch size.
    if isinstance(value, bool) is not (expected is bool) or not isinstance(value, expected):
        raise SpecError(f"target.{key}: expected {expected.__name__}, got {value!r}")


def _builtin(*profiles: HardwareProfile) -> dict[str, HardwareProfile]:
    return {p.name: p for p in profiles}


# Built-in profiles: CPU inference at a single image (interactive serving) and small batches
# (throughput), GPU serving at batch 1 in half precision and at batch 128 in bf16, and the
# paper's latency: a training step at batch 128 (halved until it fits) in bf16 (its TPUv3
# column) and in fp32 (its V100 column).
BUILTIN_PROFILES: dict[str, HardwareProfile] = _builtin(
    HardwareProfile(name="cpu-fp32-b1", device="cpu", batch_size=1),
    HardwareProfile(name="cpu-fp32-b1-t1", device="cpu", batch_size=1, threads=1),
    HardwareProfile(name="cpu-fp32-b8", device="cpu", batch_size=8),
    HardwareProfile(name="cpu-fp32-b16", device="cpu", batch_size=16),
    HardwareProfile(name="cpu-fp32-b64", device="cpu", batch_size=64),
    HardwareProfile(name="cpu-bf16-b16", device="cpu", batch_size=16, dtype="bf16"),
    HardwareProfile(name="cuda-fp32-b1", device="cuda", batch_size=1),
    HardwareProfile(name="cuda-fp16-b1", device="cuda", batch_size=1, dtype="fp16"),
    HardwareProfile(name="cuda-bf16-b1", device="cuda", batch_size=1, dtype="bf16"),
    HardwareProfile(name="cuda-fp16-b8", device="cuda", batch_size=8, dtype="fp16"),
    HardwareProfile(name="cuda-bf16-b128", device="cuda", batch_size=128, dtype="bf16"),
    HardwareProfile(
        name="cuda-bf16-b128-compile", device="cuda", batch_size=128, dtype="bf16", compile=True
    ),
    HardwareProfile(
        name="cuda-bf16-train-b128", mode="train_step", device="cuda", batch_size=128, dtype="bf16"
    ),
    HardwareProfile(name="cuda-fp32-train-b128", mode="train_step", device="cuda", batch_size=128),
    HardwareProfile(name="cpu-fp32-train-b16", mode="train_step", device="cpu", batch_size=16),
)


def known_profiles(
    extra: Mapping[str, HardwareProfile] | None = None,
) -> dict[str, HardwareProfile]:
    """Built-in profiles, overridden and extended by ``extra`` (for example a space's target)."""
    merged = dict(BUILTIN_PROFILES)
    merged.update(extra or {})
    return merged


def get_profile(
    name: str, *, extra: Mapping[str, HardwareProfile] | None = None
) -> HardwareProfile:
    """The profile called ``name``: one of ``extra`` (which wins) or a built-in one.

    An unknown name is an ``UnknownProfileError`` (exit 2) that lists every known name.
    """
    profiles = known_profiles(extra)
    if name in profiles:
        return profiles[name]
    raise UnknownProfileError(
        f"unknown hardware profile {name!r}; known profiles: {', '.join(sorted(profiles))}"
    )


def device_name(device: str) -> str:
    """The real name of ``device``: ``AMD EPYC (2 CPUs)`` or ``NVIDIA H200``.

    For a CPU the count of CPUs this process may run on is part of the name, because with torch's
    default thread count it changes the figure as much as the model does.
    Raises ``RsSearchError`` for a CUDA device this machine does not have.
    """
    spec = parse_device(device, where="device", allow_auto=False)
    if spec.type == "cpu":
        return f"{cpu_model()} ({_cpu_count()} CPUs)"
    import torch

    if not torch.cuda.is_available():
        raise RsSearchError(
            f"device {device!r}: this machine has no CUDA device (torch "
            f"{torch.__version__}); measure on the hardware the profile names"
        )
    index = spec.index if spec.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RsSearchError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return str(torch.cuda.get_device_name(index))


def cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_version() -> str:
    import torch

    return str(torch.__version__)
