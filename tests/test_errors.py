"""errors.is_out_of_memory: the one out-of-memory test of the training engine and the latency
probe (they used to check differently)."""

from __future__ import annotations

import pytest
import torch

from rs_search.errors import CandidateOutOfMemory, DataError, is_out_of_memory


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 4096 bytes"
        ),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED: not enough memory for the workspace"),
        OSError(12, "Cannot allocate memory"),
        MemoryError(),
    ],
)
def test_out_of_memory(exc: BaseException) -> None:
    assert is_out_of_memory(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x2)"),
        ValueError("out of memory"),  # not an allocator's error type
        DataError("/data/x.jpg: cannot read image"),
        CandidateOutOfMemory("does not fit"),  # already the answer, not an allocator failure
        KeyboardInterrupt(),
    ],
)
def test_not_out_of_memory(exc: BaseException) -> None:
    assert not is_out_of_memory(exc)


def test_a_real_cpu_allocation_failure() -> None:
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(info.value)
