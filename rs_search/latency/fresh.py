"""One latency figure taken in a fresh Python process, by the protocol the search uses.

``measure_in_fresh_process(arch, profile, device=..., protocol=...)`` starts
``python -m rs_search.latency.fresh``, hands it the architecture, the profile, the device and the
protocol as JSON on its standard input, and reads back the ``LatencyResult`` that
``rs_search.latency.measure.measure`` returned there. The child does nothing else: no cache, no
study, no second protocol; this module is only the process boundary.

Why a new process: a figure taken after other models ran in the same process can inherit their
state (the allocator's fragmentation and cached blocks, cuDNN's autotuning cache, Dynamo's
caches, oneDNN's primitive cache, a thread pool sized by someone else), so a check of a stored
figure (``rs-search export --remeasure``) must start from nothing, as a deployment does (issue 14:
"one fresh process per figure").

Failures: the candidate failing (out of memory, an error) is an answer, a result with status
``oom``/``error``, as in ``measure``. The process failing (a device this machine does not have,
a crash, no result) is an ``RsSearchError`` of one line naming the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from rs_search.errors import RsSearchError
from rs_search.latency.profiles import HardwareProfile
from rs_search.latency.result import LatencyResult
from rs_search.latency.window import DEFAULT_PROTOCOL, Protocol
from rs_search.specs import ArchSpec

__all__ = ["FreshProcessFailed", "measure_in_fresh_process"]

# The child prints its answer on one line after this marker, so nothing else a library prints on
# stdout can be mistaken for it.
_MARK = "rs-search-fresh-result: "


class FreshProcessFailed(RsSearchError):
    """The measuring process failed or gave no result (not the candidate: see the docstring)."""


def measure_in_fresh_process(
    arch: ArchSpec,
    profile: HardwareProfile,
    *,
    device: str,
    protocol: Protocol = DEFAULT_PROTOCOL,
    timeout_s: float | None = None,
) -> LatencyResult:
    """``measure(arch, profile, device=device, protocol=protocol)`` in a new Python process.

    The child inherits this process's environment (``PYTHONPATH``, ``OMP_NUM_THREADS``); the
    thread count that counts is the profile's, which ``measure`` sets. ``timeout_s``: None waits
    as long as the protocol takes (a large net on a CPU can take minutes); a child still running
    when this returns or raises (Ctrl-C included) is killed.
    """
    spec = {
        "arch": arch.to_dict(),
        "profile": profile.to_dict(),
        "device": device,
        "protocol": asdict(protocol),
    }
    command = [sys.executable, "-m", "rs_search.latency.fresh"]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, stderr = proc.communicate(json.dumps(spec), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FreshProcessFailed(
            f"measuring {arch.short_label} on {profile.name}: no figure after {timeout_s:g} s"
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    answer = _answer(stdout)
    if proc.returncode == 0 and answer is not None and "result" in answer:
        return LatencyResult.from_dict(answer["result"], where="fresh process result")
    why = (answer or {}).get("error") or _last_line(stderr) or f"exit status {proc.returncode}"
    raise FreshProcessFailed(
        f"measuring {arch.short_label} on {profile.name} in a fresh process: {why}"
    )


def _answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARK):
            try:
                value = json.loads(line[len(_MARK) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _child() -> int:
    """The child's side: read the spec, measure, print the result (or the one-line error)."""
    try:
        spec = json.loads(sys.stdin.read())
        arch = ArchSpec.from_dict(spec["arch"])
        profile = HardwareProfile.from_dict(spec["profile"], where="profile")
        protocol = Protocol(**spec["protocol"])
        from rs_search.latency.measure import measure

        result = measure(arch, profile, device=str(spec["device"]), protocol=protocol)
    except RsSearchError as exc:
        print(_MARK + json.dumps({"error": str(exc)}), flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(_MARK + json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(_MARK + json.dumps({"result": result.to_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
