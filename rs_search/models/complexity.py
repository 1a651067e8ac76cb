"""Parameters and FLOPs of any ArchSpec, next to the model (as pycls keeps complexity).

Conventions, the ones of the reference figures (``../shared/reference/resnet_rs.yaml``):

* parameters: trainable parameters (BN running statistics are buffers and do not count);
* FLOPs: one forward pass of one image at ``resolution`` x ``resolution``, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` = 2 x multiply-adds of convolutions and matrix
  products. BN, ReLU, pooling, the SE gate and the residual adds are not counted.

Both are measured on a model built on the ``meta`` device, so no weights are allocated and no
arithmetic runs; FLOPs count each distinct block of a stage once (see ``_count_flops``), so even
ResNet-RS-420 at 320 px takes well under a second. Results are cached per
architecture (an ArchSpec hashes and compares by its fields, exactly what ``arch.key()`` hashes).
DESIGN.md section 1, scaling rule 3: these do not predict latency or memory; measure those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from rs_search.models.resnet import ResNetRS, build_model
from rs_search.specs import ArchSpec

__all__ = ["Complexity", "complexity", "count_flops", "count_params"]

_PARAMS_RESOLUTION = 224  # parameters do not depend on the resolution; one cache entry per net


@dataclass(frozen=True, kw_only=True)
class Complexity:
    """Size and cost of one architecture at one resolution."""

    params: int  # trainable parameters
    flops: int  # forward FLOPs, batch 1, 2 x multiply-adds
    resolution: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count_params(arch: ArchSpec) -> int:
    """Trainable parameters of the network ``arch`` describes (resolution does not matter)."""
    return _count_params(dataclasses.replace(arch, resolution=_PARAMS_RESOLUTION))


def count_flops(arch: ArchSpec, resolution: int | None = None) -> int:
    """Forward FLOPs (2 x multiply-adds) of one image at ``resolution`` (default: the arch's)."""
    if resolution is not None and resolution != arch.resolution:
        arch = dataclasses.replace(arch, resolution=resolution)  # validates the resolution
    return _count_flops(arch)


def complexity(arch: ArchSpec) -> Complexity:
    """Parameters and FLOPs of ``arch`` at ``arch.resolution``."""
    return Complexity(
        params=count_params(arch), flops=count_flops(arch), resolution=arch.resolution
    )


@lru_cache(maxsize=16)
def _meta_model(arch: ArchSpec) -> ResNetRS:
    """The network of ``arch`` (resolution normalised) on the meta device, in eval mode: shapes
    only, so a few cached copies cost next to nothing and serve every resolution."""
    with torch.device("meta"):
        return build_model(arch).eval()


@lru_cache(maxsize=1024)
def _count_params(arch: ArchSpec) -> int:
    model = _meta_model(arch)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@lru_cache(maxsize=1024)
def _count_flops(arch: ArchSpec) -> int:
    model = _meta_model(dataclasses.replace(arch, resolution=_PARAMS_RESOLUTION))
    x = torch.empty(1, arch.in_channels, arch.resolution, arch.resolution, device="meta")
    counter = FlopCounterMode(display=False)
    repeated = 0
    with counter, torch.no_grad():
        # The forward of ResNetRS.forward, stage by stage: every block after the second of a stage
        # is the second's twin (same config, same input shape: stride 1, no projection), so it is
        # counted once and multiplied. Meta tensors still run Python shape kernels, and this cuts
        # RS-420 from 139 block forwards to 8 (tests: equal to a full forward's count).
        x = model.forward_stem(x)
        for stage in model.stages:
            x = stage[0](x)
            if len(stage) > 1:
                assert all(block.downsample is None for block in list(stage)[1:])
                before = counter.get_total_flops()
                x = stage[1](x)
                repeated += (len(stage) - 2) * (counter.get_total_flops() - before)
        model.forward_head(x)
    return int(counter.get_total_flops() + repeated)
