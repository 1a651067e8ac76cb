"""One error hierarchy for everything a user can get wrong.

The CLI turns an ``RsSearchError`` into one clear line and ``exit_code`` (2 for bad input);
a traceback appears only with ``--debug`` (DESIGN.md section 3, "Errors").
"""

from __future__ import annotations


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
