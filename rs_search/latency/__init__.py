"""Latency and memory measured on the hardware that will run the model (Bello et al. 2021,
scaling rule 3: FLOPs and parameter counts do not predict them).

- ``profiles``: ``HardwareProfile``, the built-in profiles, ``get_profile``, ``device_name``;
- ``measure``: the protocol, ``measure(arch, profile, device=...) -> LatencyResult`` (import it
  from the module: the package attribute ``measure`` is the module); ``window``: which
  repetitions a figure comes from (pure functions, ``Protocol``); ``passes``: what one timed pass
  is (inference or a training step); ``backends``: the device and torch's backend settings;
- ``cache``: ``LatencyCache`` in the study database (``rs_latency``), claims for workers;
- ``worker``: the latency worker that fills the cache for a study;
- ``survey``: FLOPs against latency over a space's sampled architectures;
- ``memory``, ``runqueue``, ``stats``: peak memory, CPU contention, rank correlation.

``profiles``, ``result`` and ``window`` import no torch; the rest load on first use, so importing
this package stays cheap (DESIGN.md section 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_search.latency.profiles import (
    BUILTIN_PROFILES,
    HardwareProfile,
    UnknownProfileError,
    device_name,
    get_profile,
    known_profiles,
)
from rs_search.latency.result import LatencyResult
from rs_search.latency.window import DEFAULT_PROTOCOL, Protocol

if TYPE_CHECKING:
    from rs_search.latency.cache import LatencyCache

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_PROTOCOL",
    "HardwareProfile",
    "LatencyCache",
    "LatencyResult",
    "Protocol",
    "UnknownProfileError",
    "device_name",
    "get_profile",
    "known_profiles",
]

_LAZY = {"LatencyCache": "rs_search.latency.cache"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rs_search.latency' has no attribute {name!r}")
