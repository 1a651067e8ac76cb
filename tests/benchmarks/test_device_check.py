"""``benchmarks/device_check.py``: the CPU dry run writes both files with every part present, a
failing part is recorded with its reason while the others still run, and the helpers the GPU
run depends on (peak table, batch search, device-side augmentation, the summary) work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))  # devcheck, the script's helper package

from devcheck import gpu_augment  # noqa: E402
from devcheck.machine import dense_bf16_peak  # noqa: E402
from devcheck.report import markdown  # noqa: E402
from devcheck.runner import PartContext, PartSpec, Recorder, child_main  # noqa: E402
from devcheck.train_rate import fit_batch  # noqa: E402

PART_NAMES = ["machine", "train_eager", "datapath", "latency", "checks", "search", "train_compile"]


def _run(out: Path, *args: str, timeout: float = 1800) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _report(out: Path) -> tuple[dict[str, Any], str]:
    report = json.loads((out / "device_check.json").read_text())
    return report, (out / "device_check.md").read_text()


@pytest.mark.slow
def test_dry_run_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    code, output = _run(tmp_path, "--dry-run")
    assert code == 0, output[-4000:]
    report, md = _report(tmp_path)
    parts = report["parts"]
    assert list(parts) == PART_NAMES
    for name, part in parts.items():
        assert part["status"] in ("ok", "skipped"), (name, part.get("reason"))
        assert part["status"] == "ok" or part["reason"]
        for item_name, item in part["items"].items():
            assert item["status"] in ("ok", "skipped"), (name, item_name, item)
            assert item["status"] == "ok" or item["reason"], (name, item_name)
        assert f"(`{name}`: {part['status']})" in md
    # each part's code path produced its figures
    rates = parts["train_eager"]["results"]["rates"]
    assert rates["ours"]["images_per_s"] > 0 and rates["timm"]["images_per_s"] > 0
    assert parts["train_compile"]["results"]["compile_backend"] == "eager"
    assert parts["train_compile"]["results"]["rates"]["ratio"]["median"] > 0
    assert all(v > 0 for v in parts["datapath"]["results"]["loader_images_per_s"].values())
    figures = parts["latency"]["results"]["figures"]
    assert figures["inference_b1"]["median_ms"] > 0 and figures["inference_b2"]["processes"] == 1
    checks = parts["checks"]["items"]
    assert checks["uint8_normalize"]["bit_equal"] is True
    assert checks["checkpoint_rng"]["expectation_met"] is True
    assert parts["search"]["results"]["trials"].get("COMPLETE", 0) >= 1
    assert parts["search"]["results"]["front"]
    assert (tmp_path / "search.db").is_file()
    # what needs CUDA says so
    assert "CUDA" in parts["datapath"]["items"]["gpu_path"]["reason"]
    assert "CUDA" in checks["sync_debug_epoch"]["reason"]


@pytest.mark.slow
def test_a_failing_part_is_recorded_and_the_next_parts_still_run(tmp_path: Path) -> None:
    code, output = _run(
        tmp_path,
        "--dry-run",
        "--only",
        "machine,train_eager,datapath,checks",
        "--inject",
        "machine=oom,train_eager=raise,datapath=hang",
        "--part-budget",
        "datapath=20",
    )
    assert code == 1, output[-4000:]
    report, md = _report(tmp_path)
    parts = report["parts"]
    assert list(parts) == ["machine", "train_eager", "datapath", "checks"]
    assert parts["machine"]["status"] == "oom"
    assert "out of memory (injected" in parts["machine"]["reason"]
    assert parts["train_eager"]["status"] == "failed"
    assert "injected failure" in parts["train_eager"]["reason"]
    assert parts["datapath"]["status"] == "timeout"
    assert "budget of 20 s" in parts["datapath"]["reason"]
    assert parts["checks"]["status"] == "ok"  # after both failures
    assert "injected failure" in md and "timeout" in md


def _context(tmp_path: Path) -> PartContext:
    return PartContext(
        name="unit",
        dry_run=True,
        device="cpu",
        work=tmp_path,
        out=tmp_path,
        script=str(SCRIPT),
        t0=0.0,
        deadline=float("inf"),
        previous={},
        options={},
    )


def test_an_item_that_raises_is_recorded_and_the_part_goes_on(tmp_path: Path) -> None:
    result = tmp_path / "part.json"
    ctx = _context(tmp_path)

    def part(ctx: PartContext, rec: Recorder) -> None:
        with rec.item("runs_out_of_memory"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with rec.item("breaks"):
            raise ValueError("a bad figure\nsecond line")
        with rec.item("works") as item:
            item["figure"] = 42
        rec.put("after", True)

    spec = PartSpec(name="unit", title="unit", module="-", budget_s=1, dry_budget_s=1)
    assert child_main(spec, ctx, result, part) == 1
    record = json.loads(result.read_text())
    items = record["items"]
    assert items["runs_out_of_memory"]["status"] == "oom"
    assert items["breaks"] == {**items["breaks"], "status": "failed"}
    assert items["breaks"]["reason"] == "ValueError: a bad figure"
    assert items["works"]["status"] == "ok" and items["works"]["figure"] == 42
    assert record["results"]["after"] is True
    assert record["status"] == "failed" and record["reason"].startswith("2 of 3 items")


def test_a_part_that_raises_outside_its_items_is_failed_with_its_reason(tmp_path: Path) -> None:
    result = tmp_path / "part.json"

    def part(ctx: PartContext, rec: Recorder) -> None:
        rec.put("before", 1)
        raise KeyError("missing")

    spec = PartSpec(name="unit", title="unit", module="-", budget_s=1, dry_budget_s=1)
    assert child_main(spec, _context(tmp_path), result, part) == 1
    record = json.loads(result.read_text())
    assert record["status"] == "failed" and record["reason"] == "KeyError: 'missing'"
    assert record["results"] == {"before": 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "nope"], "--only: unknown part 'nope'"),
        (["--inject", "latency=explode"], "--inject latency='explode': allowed: raise, oom, hang"),
        (["--part-budget", "latency"], "--part-budget 'latency': expected NAME=VALUE"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = _run(tmp_path, *args, timeout=120)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), output
    assert not (tmp_path / "device_check.json").exists()


def test_the_peak_table_knows_the_h200_and_omits_what_it_does_not_know() -> None:
    peak = dense_bf16_peak("NVIDIA H200")
    assert peak is not None and peak.tflops == 989.0 and "datasheet" in peak.source
    assert dense_bf16_peak("NVIDIA A100-SXM4-80GB").tflops == 312.0  # type: ignore[union-attr]
    assert dense_bf16_peak("NVIDIA H200 NVL") is None  # another part, another peak
    assert dense_bf16_peak("Some Future GPU") is None


def test_the_batch_search_halves_on_out_of_memory_only() -> None:
    tried: list[int] = []

    def step(batch: int) -> None:  # a device that holds 24 images
        tried.append(batch)
        if batch > 24:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {batch}")

    assert fit_batch(step, 128) == (16, [128, 64, 32])
    assert tried == [128, 64, 32, 16]

    def broken(batch: int) -> None:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    with pytest.raises(RuntimeError, match="CUDNN_STATUS"):
        fit_batch(broken, 8)

    def never(batch: int) -> None:
        raise torch.OutOfMemoryError("out of memory")

    assert fit_batch(never, 4) == (None, [4, 2, 1])


def test_every_device_side_randaugment_op_keeps_the_batch_shape_and_dtype() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 40, 32), dtype=torch.uint8, generator=gen)
    for name in gpu_augment.OPS:
        for sign in (1, -1):
            out = gpu_augment.apply_op_batched(x, name, 10, sign=sign, generator=gen)
            assert out.shape == x.shape and out.dtype == torch.uint8, name
    invert = gpu_augment.apply_op_batched
    assert torch.equal(invert(invert(x, "Invert", 10), "Invert", 10), x)
    assert torch.equal(gpu_augment.apply_op_batched(x, "Rotate", 0), x)  # level 0: no turn
    cut = gpu_augment.apply_op_batched(torch.zeros_like(x), "Cutout", 10, fill=128, generator=gen)
    assert (cut == 128).any() and (cut == 0).any()  # a square per image, not the whole image
    # SolarizeAdd adds below 128 only
    grey = torch.full_like(x, 100)
    grey[:, :, :, 16:] = 200
    added = gpu_augment.apply_op_batched(grey, "SolarizeAdd", 10)
    assert (added[..., :16] == 210).all() and (added[..., 16:] == 200).all()


def test_the_device_side_path_decodes_crops_and_augments_jpeg_bytes() -> None:
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((60, 80), (90, 70))]
    encoded = [encode_jpeg(image) for image in images]
    torch.manual_seed(0)
    out = gpu_augment.augment_batch(
        encoded, crop=32, layers=2, magnitude=10, device=torch.device("cpu"), generator=gen
    )
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8
    torch.manual_seed(0)
    again = gpu_augment.augment_batch(
        encoded,
        crop=32,
        layers=2,
        magnitude=10,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(out, again)  # every draw comes from the seeded generators


def test_the_summary_shows_what_a_broken_run_left() -> None:
    report = {
        "dry_run": False,
        "started": "2026-12-02T00:00:00+00:00",
        "wall_s": 12.0,
        "total_budget_s": 470,
        "command": ["device_check.py", "--out", "x"],
        "parts": {
            "machine": {"title": "Machine", "status": "ok", "results": {"machine": {}}},
            "train_eager": {
                "title": "Training",
                "status": "oom",
                "reason": "OutOfMemoryError: CUDA out of memory",
                "items": {"batch_search": {"status": "oom", "reason": "no batch fits"}},
            },
            "latency": {"title": "Latency", "status": "timeout", "reason": "ran past 100 s"},
        },
    }
    md = markdown(report)
    assert "| train_eager | oom |" in md
    assert "- batch_search: oom (no batch fits)" in md
    assert "| latency | timeout |" in md and "ran past 100 s" in md
