"""One error hierarchy for everything a user can get wrong.

The CLI turns an ``RsSearchError`` into one clear line and ``exit_code`` (2 for bad input);
a traceback appears only with ``--debug`` (DESIGN.md section 3, "Errors").
"""

from __future__ import annotations

import sys


class RsSearchError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code: int = 2


class SpecError(RsSearchError, ValueError):
    """A candidate (ArchSpec/RecipeSpec) or candidate file is malformed."""


class SpaceError(RsSearchError, ValueError):
    """A search-space file is malformed.

    The message names the file, the key path and what is allowed.
    """


class BudgetError(RsSearchError, ValueError):
    """A ``--budget`` string is malformed (no unit, unknown unit, not positive)."""


class DataError(RsSearchError):
    """A data source is unknown, missing, empty or unreadable."""


class StorageError(RsSearchError):
    """The study storage cannot be reached or used. Messages never contain a password."""


class TrainingDiverged(RsSearchError):
    """Loss became NaN or infinite; the run stops with its own exit status."""

    exit_code = 3


class CandidateOutOfMemory(RsSearchError):
    """A candidate does not fit in the device's memory (training or latency measurement).

    For a search this is an answer ("does not fit"), not a crash: the trial fails with this reason
    and the worker goes on.
    """

    exit_code = 4


class TrialInterrupted(RsSearchError):
    """SIGTERM arrived: the run checkpointed and handed its work back."""

    exit_code = 0


class RankFailed(RsSearchError):
    """Another rank of this process's torch.distributed group failed alone (out of memory, bad
    data, a crash) and ended the group; carries that rank's reason and exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Messages of allocators that fail without torch's own OutOfMemoryError type: the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory"), CUDA calls outside the caching allocator
# ("CUDA error: out of memory"), cuDNN/cuBLAS workspaces, the OS ("Cannot allocate memory").
_OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means the device (or the host) ran out of memory: torch's
    ``OutOfMemoryError``, Python's ``MemoryError``, or a ``RuntimeError`` with an allocator's
    out-of-memory message. The one test the training engine and the latency probe share."""
    torch = sys.modules.get("torch")  # never imported here: an exception from torch means it is
    if isinstance(exc, MemoryError) or (
        torch is not None and isinstance(exc, torch.OutOfMemoryError)
    ):
        return True
    if not isinstance(exc, RuntimeError | OSError):  # OSError: ENOMEM from the OS
        return False
    text = str(exc).lower()
    return any(message in text for message in _OOM_MESSAGES)
