"""Part ``datapath``: images/s the image-folder loader delivers against the GPU's step rate.

The part writes JPEGs of ImageNet-like size (``Sizes.jpeg_size`` on average, +-25% per side,
smooth random fields with grain, quality 90: about as many bytes per pixel as photographs) into
an image folder, opens it with the training code (``build_data("imagefolder:...")``: PIL decode,
random-resized crop to ``Sizes.crop`` px, flip, the official RandAugment, uint8 out) and its
loaders (``build_loaders``: the sampler, seeds and pinned memory a trial uses), and counts the
images per second that arrive at the training process with N loader processes. The files are
read from the page cache: the figure is the CPU's decoding and augmentation, not a disk's.

The GPU's step rate is ``train_eager``'s images/s for our model at its batch. When the best
loader rate falls short of it, the GPU-side path of :mod:`devcheck.gpu_augment` (decode on the
device, augmentation on the device) is measured the same way.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from devcheck.runner import PartContext, Recorder
from devcheck.sizes import Sizes, sizes


def _write_one(task: tuple[str, int, int, int, int, int]) -> int:
    """Write one JPEG; returns its size in bytes. A ``tint`` >= 0 gives the image its class's hue
    (the search's images: a tiny net can learn them); -1 leaves it untinted."""
    import numpy as np
    from PIL import Image

    path, width, height, seed, tint, classes = task
    rng = np.random.default_rng(seed)
    # A random field with detail every 8 px plus colour grain: ~0.6 bytes per pixel at quality
    # 90, near ImageNet's ~0.7 (110 KB at ~400x350), so decoding costs what a photograph's does.
    coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3))
    base = Image.fromarray(coarse.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    pixels = np.asarray(base, dtype=np.float32)
    if tint >= 0:  # a hue per class, strong enough for a tiny net to learn from
        angle = 2 * np.pi * tint / classes
        pixels = 0.5 * pixels + 64 * (1 + np.array([np.cos(angle), np.sin(angle), -np.cos(angle)]))
    pixels += rng.normal(0.0, 20.0, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(path, format="JPEG", quality=90)
    return Path(path).stat().st_size


def write_image_folder(
    root: Path,
    *,
    count: int,
    classes: int,
    size: tuple[int, int],
    val_per_class: int,
    seed: int = 0,
    tinted: bool = False,
) -> dict[str, Any]:
    """``root/{train,val}/c<k>/<i>.jpg``: ``count`` training images over ``classes`` and
    ``val_per_class`` validation images per class; sizes vary +-25% around ``size``;
    ``tinted``: each class has its hue (learnable)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = []
    for split, per_class in (("train", math.ceil(count / classes)), ("val", val_per_class)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w = int(size[0] * rng.uniform(0.75, 1.25))
                h = int(size[1] * rng.uniform(0.75, 1.25))
                seed_i = int(rng.integers(2**31))
                tasks.append((str(folder / f"{i}.jpg"), w, h, seed_i, k if tinted else -1, classes))
    start = time.perf_counter()
    if len(tasks) > 64:  # forked before any CUDA work in this process
        with multiprocessing.get_context("fork").Pool(min(16, multiprocessing.cpu_count())) as pool:
            sizes_b = pool.map(_write_one, tasks, chunksize=16)
    else:
        sizes_b = [_write_one(t) for t in tasks]
    pixels = sum(t[1] * t[2] for t in tasks)
    return {
        "images": len(tasks),
        "classes": classes,
        "mean_width": round(sum(t[1] for t in tasks) / len(tasks)),
        "mean_height": round(sum(t[2] for t in tasks) / len(tasks)),
        "mean_kb": round(sum(sizes_b) / len(sizes_b) / 1024, 1),
        "bytes_per_pixel": round(sum(sizes_b) / pixels, 3),
        "write_s": round(time.perf_counter() - start, 2),
    }


def _source(root: Path, sz: Sizes, repeats: int) -> Any:
    """The training code's data source for ``root``, its train split repeated ``repeats`` times
    (a measurement longer than one pass over the files)."""
    from torch.utils.data import ConcatDataset

    from rs_search.specs import ArchSpec, RecipeSpec
    from rs_search.train.data import build_data

    arch = ArchSpec(layout=(1, 1, 1, 1), resolution=sz.crop, num_classes=sz.jpeg_classes)
    layers, magnitude = sz.randaug
    recipe = RecipeSpec(
        batch_size=sz.loader_batch, randaug_layers=layers, randaug_magnitude=magnitude
    )
    source = build_data(f"imagefolder:{root}", arch, recipe)
    train = ConcatDataset([source.train] * repeats)
    return replace(source, train=train, train_size=len(train))


def _close(*loaders: Any) -> None:
    """Stop persistent loader processes now (as ``Trainer.close`` does)."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None


def _rate(arrivals: list[float], batch: int, warm: int) -> float | None:
    """Images/s between the ``warm``-th arrival and the last (the prefetch queues filled before
    the first arrivals; after them, arrivals follow production)."""
    if len(arrivals) < warm + 3:
        warm = max(0, len(arrivals) // 3)
    if len(arrivals) - warm < 2:
        return None
    return batch * (len(arrivals) - 1 - warm) / (arrivals[-1] - arrivals[warm])


def loader_rate(
    source: Any, *, workers: int, sz: Sizes, device: Any, seconds: float
) -> dict[str, Any]:
    from rs_search.train.distributed import DistContext
    from rs_search.train.loader import batches, build_loaders

    train, sampler, val = build_loaders(
        source,
        per_rank_batch=sz.loader_batch,
        ctx=DistContext(),
        device=device,
        workers=workers,
        seed=0,
    )
    sampler.set_epoch(1)
    warm = 2 * workers + 1  # DataLoader's default prefetch of 2 batches per process
    arrivals: list[float] = []
    start = time.perf_counter()
    try:
        for images, _labels in batches(train):
            if device.type == "cuda":
                images.to(device, non_blocking=True)  # the trainer's copy of a pinned batch
            arrivals.append(time.perf_counter())
            if len(arrivals) > warm + 8 and arrivals[-1] - arrivals[warm] > seconds:
                break
    finally:
        _close(train, val)
    rate = _rate(arrivals, sz.loader_batch, warm)
    return {
        "workers": workers,
        "batches": len(arrivals),
        "first_batch_s": round(arrivals[0] - start, 2) if arrivals else None,
        "images_per_s": round(rate, 1) if rate else None,
        "per_process": round(rate / max(workers, 1), 1) if rate else None,
    }


def per_image_cost(root: Path, sz: Sizes, count: int) -> dict[str, float]:
    """Milliseconds per image of each stage in one process: decode, crop+flip, RandAugment."""
    import torch
    from torchvision.transforms import InterpolationMode, v2

    from rs_search.train.data import ImageLoader
    from rs_search.train.randaugment import RandAugment

    paths = sorted((root / "train").rglob("*.jpg"))[:count]
    load = ImageLoader("RGB")
    crop = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(sz.crop, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    layers, magnitude = sz.randaug
    augment = RandAugment(num_layers=layers, magnitude=magnitude)
    totals = {"decode": 0.0, "crop_flip": 0.0, "randaugment": 0.0}
    torch.manual_seed(0)
    for path in paths:
        t0 = time.perf_counter()
        image = load(str(path))
        t1 = time.perf_counter()
        cropped = crop(image)
        t2 = time.perf_counter()
        augment(cropped)
        t3 = time.perf_counter()
        totals["decode"] += t1 - t0
        totals["crop_flip"] += t2 - t1
        totals["randaugment"] += t3 - t2
    return {k: round(1e3 * v / len(paths), 3) for k, v in totals.items()}


def gpu_path_rate(root: Path, *, sz: Sizes, device: Any, seconds: float) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from devcheck.gpu_augment import EncodedFiles, augment_batch, collate_encoded

    paths = sorted((root / "train").rglob("*.jpg"))
    repeats = max(1, math.ceil(400 * sz.loader_batch / len(paths)))
    loader = DataLoader(
        EncodedFiles(paths * repeats),
        batch_size=sz.loader_batch,
        shuffle=True,
        num_workers=4,
        collate_fn=collate_encoded,
        generator=torch.Generator().manual_seed(0),
    )
    generator = torch.Generator().manual_seed(0)
    layers, magnitude = sz.randaug
    timings: dict[str, float] = {}
    arrivals: list[float] = []
    warm = 3
    for encoded in loader:
        stage: dict[str, float] = {}
        augment_batch(
            encoded,
            crop=sz.crop,
            layers=layers,
            magnitude=magnitude,
            device=device,
            generator=generator,
            timings=stage,
        )
        arrivals.append(time.perf_counter())
        if len(arrivals) > warm:
            for k, v in stage.items():
                timings[k] = timings.get(k, 0.0) + v
        if len(arrivals) > warm + 5 and arrivals[-1] - arrivals[warm] > seconds:
            break
    rate = _rate(arrivals, sz.loader_batch, warm)
    timed = max(1, len(arrivals) - 1 - warm)
    return {
        "batches": len(arrivals),
        "images_per_s": round(rate, 1) if rate else None,
        "ms_per_batch": {k: round(1e3 * v / timed, 2) for k, v in timings.items()},
        "read_workers": 4,
    }


def _figures(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("status", "reason", "wall_s")}


def run(ctx: PartContext, rec: Recorder) -> None:
    sz = sizes(ctx.dry_run)
    root = ctx.work / "imagefolder"
    with rec.item("write_jpegs") as item:
        item.update(
            write_image_folder(
                root,
                count=sz.jpeg_count,
                classes=sz.jpeg_classes,
                size=sz.jpeg_size,
                val_per_class=2,
            )
        )
        rec.put("jpegs", _figures(item))
    import torch

    device = torch.device(ctx.device)
    step = (ctx.earlier("train_eager", "rates") or {}).get("ours", {}).get("images_per_s")
    rec.put("gpu_step_images_per_s", step)
    rec.put("gpu_step_batch", ctx.earlier("train_eager", "batch"))
    rec.put("crop", sz.crop)
    rec.put("randaug", list(sz.randaug))
    rec.put("loader_batch", sz.loader_batch)
    with rec.item("per_image_cost") as item:
        item["ms"] = per_image_cost(root, sz, count=min(48, sz.jpeg_count))
        rec.put("per_image_ms", item["ms"])
    train_images = sz.jpeg_count
    needed = 400 if ctx.device == "cuda" else 40  # batches a measurement may take
    source = _source(root, sz, repeats=max(1, math.ceil(needed * sz.loader_batch / train_images)))
    rates: dict[str, Any] = {}
    for workers in sorted(sz.loader_workers, reverse=True):  # the most telling first
        name = f"loader_{workers}"
        if ctx.left() < sz.loader_s + 10:
            rec.skip(name, f"the part's budget ran short ({ctx.left():.0f} s left)")
            continue
        with rec.item(name) as item:
            item.update(
                loader_rate(source, workers=workers, sz=sz, device=device, seconds=sz.loader_s)
            )
            rates[str(workers)] = item["images_per_s"]
            rec.put("loader_images_per_s", rates)
            ctx.log(f"{workers} loader processes: {item['images_per_s']} img/s")
    best = max((v for v in rates.values() if v), default=None)
    keeps_up = None if step is None or best is None else best >= step
    rec.put("loader_keeps_up", keeps_up)
    if best and step:
        per_process = max(
            (rates[str(n)] / max(n, 1) for n in sz.loader_workers if rates.get(str(n))),
            default=None,
        )
        if per_process:
            rec.put("processes_needed", math.ceil(step / per_process))
    if device.type != "cuda":
        rec.skip(
            "gpu_path",
            "needs CUDA: JPEG decoding on the device (torchvision.io.decode_jpeg, nvJPEG)",
        )
    elif keeps_up:
        rec.skip("gpu_path", f"the CPU loader keeps up ({best} >= {step} img/s)")
    elif ctx.left() < sz.loader_s + 10:
        rec.skip("gpu_path", f"the part's budget ran short ({ctx.left():.0f} s left)")
    else:
        with rec.item("gpu_path") as item:
            item.update(gpu_path_rate(root, sz=sz, device=device, seconds=sz.loader_s))
            rec.put("gpu_path", _figures(item))
