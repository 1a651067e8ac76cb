"""One device-string grammar (rs_search.devices) for flags, profiles and the search launcher."""

from __future__ import annotations

import pytest
import torch

from rs_search.devices import DeviceSpec, is_device, parse_device, resolve, worker_devices
from rs_search.errors import RsSearchError


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("auto", DeviceSpec(type="auto")),
        ("cpu", DeviceSpec(type="cpu")),
        ("cuda", DeviceSpec(type="cuda")),
        ("cuda:3", DeviceSpec(type="cuda", index=3)),
    ],
)
def test_parse(text: str, spec: DeviceSpec) -> None:
    assert parse_device(text) == spec and str(spec) == text and is_device(text)


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "cuda:", "cuda:-1", "auto:1", "CUDA", " cpu", ""])
def test_refused_with_one_line(text: str) -> None:
    with pytest.raises(RsSearchError) as info:
        parse_device(text, where="--device")
    message = str(info.value)
    assert message.startswith(f"--device {text!r}") and "\n" not in message
    assert message.endswith("allowed: auto, cpu, cuda, cuda:<index>")
    assert not is_device(text)


def test_profiles_do_not_take_auto() -> None:
    assert not is_device("auto", allow_auto=False) and is_device("cuda:1", allow_auto=False)
    with pytest.raises(RsSearchError, match="allowed: cpu, cuda, cuda:<index>$"):
        parse_device("auto", where="target.device", allow_auto=False)
    assert not is_device(None) and not is_device(3)


def test_resolve_on_this_machine() -> None:
    assert resolve("cpu") == torch.device("cpu")
    assert resolve("cpu", local_rank=1, local_ranks=2) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve("auto") == torch.device("cpu")
        with pytest.raises(RsSearchError, match="CUDA is not available on this machine"):
            resolve("cuda")


def test_one_gpu_index_for_several_local_ranks_is_refused() -> None:
    """``--device cuda:1`` in a group of two processes on this machine would put both on GPU 1;
    refused before CUDA is even looked for (so the refusal is the same on every machine)."""
    with pytest.raises(RsSearchError) as info:
        resolve("cuda:1", local_rank=0, local_ranks=2)
    assert "2 processes on this machine would all use GPU 1" in str(info.value)
    assert "use --device cuda" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only answers")
def test_worker_devices_without_gpus() -> None:
    assert worker_devices("auto", None) == ("cpu",)
    assert worker_devices("cpu", 3) == ("cpu", "cpu", "cpu")
    # an indexed GPU is checked against the visible ones (the fuzz test's "--device cuda:0"
    # created a study whose trial then failed)
    with pytest.raises(RsSearchError, match=r"^--device cuda:1: no such CUDA device \(0 visible\)"):
        worker_devices("cuda:1", 2)
    with pytest.raises(RsSearchError, match="no CUDA device is visible"):
        worker_devices("cuda", None)
    with pytest.raises(RsSearchError, match="--workers 0: must be at least 1"):
        worker_devices("cpu", 0)
