"""Where a trial's checkpoints live, so that its retry finds them.

By default a directory: ``<root>/<study>/trial-<origin>`` with ``root`` = ``./rs-search-artifacts``,
where ``origin`` is the trial's own number or, for a retry, the number of the trial it retries
(``failed_trial``, set by Optuna's ``RetryHeartbeatStaleTrialCallback``). A retry therefore trains
into the same directory and the engine's ``resume=True`` continues from the last good checkpoint.
Workers on several machines need the root on a shared file system (NFS, a mounted bucket) for a
retry on another machine to resume; without it the retry starts again from epoch 0, which costs
time, not correctness.

``file:///abs/path`` is accepted as the same directory store (the URL form of Optuna's
``FileSystemArtifactStore``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rs_search.errors import RsSearchError

DEFAULT_ROOT = "rs-search-artifacts"


@dataclass(frozen=True)
class CheckpointStore:
    """A directory tree of per-trial checkpoint directories."""

    root: Path

    @classmethod
    def from_spec(cls, spec: str) -> CheckpointStore:
        """A directory path or a ``file://`` URL; other schemes are refused with the choices."""
        if "://" in spec:
            parsed = urlparse(spec)
            if parsed.scheme != "file":
                raise RsSearchError(f"artifact store {spec!r}: scheme {parsed.scheme!r} is not "
                                    "supported; use a directory (shared across machines for "
                                    "cross-machine resume) or file:///PATH")
            return cls(Path(parsed.path))
        return cls(Path(spec))

    def trial_dir(self, study_name: str, origin: int) -> Path:
        return self.root / _safe(study_name) / f"trial-{origin}"

    def study_dir(self, study_name: str) -> Path:
        return self.root / _safe(study_name)


def _safe(name: str) -> str:
    """A study name as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"
