"""One ResNet-RS builder for every ArchSpec: the published family and every sampled candidate.

The network is the one of the official code (tensorflow/tpu ``models/official/resnet/
resnet_model.py`` with ``use_resnetd_stem``, ``replace_stem_max_pool``, ``resnetd_shortcut``,
``se_ratio=0.25``; Bello et al. 2021, arXiv 2103.07579, Sec. 4.1) and DESIGN.md section 1:

* ResNet-D deep stem: 3x3 s2 (32) -> 3x3 (32) -> 3x3 (64), each conv + BN + ReLU; the stride-2
  max pool is replaced by a stride-2 3x3 conv (64) + BN + ReLU.
* Bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4), the stride in the 3x3 conv.
* Downsampling shortcut: 2x2 avg-pool (stride 2) -> 1x1 conv -> BN; a 1x1 conv + BN without the
  pool when only the channels change.
* Squeeze-and-excitation (ratio 0.25 of the block's output channels) after the last BN of the
  branch, before stochastic depth and the residual add.
* BN epsilon 1e-5, last BN gamma of each branch zero-initialised, stochastic depth per stage
  (``r * (g + 2) / 5``), global average pool -> dropout -> linear head initialised N(0, 0.01).

Module names and registration order mirror timm's ``ResNet`` (``timm/models/resnet.py``), which
itself mirrors torchvision's: ``conv1``/``bn1``/``act1``/``maxpool``/``layer1..4``/``fc``, blocks
with ``conv1..3``/``bn1..3``/``se``/``downsample``. A state dict therefore moves between our
``resnetrs50`` and timm's ``resnetrs50`` (and between our ``resnet_d=False, se_ratio=0`` depth-50
net and torchvision's ``resnet50``) without renaming; the tests check both.

Variants are data (timm style): nothing here knows the named depths; ``family.py`` feeds
ArchSpecs to :func:`build_model`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rs_search.specs import ArchSpec

__all__ = [
    "BN_EPS",
    "EXPANSION",
    "STAGE_WIDTHS",
    "Bottleneck",
    "DropPath",
    "ResNetRS",
    "SqueezeExcite",
    "build_model",
    "make_divisible",
    "stage_drop_rates",
    "stage_planes",
    "stem_widths",
]

EXPANSION = 4  # bottleneck output channels = 4 x planes
STAGE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)  # planes of stages 1..4 at width 1
BN_EPS = 1e-5  # official code (resnet_model.py BATCH_NORM_EPSILON); torch's default too


def make_divisible(value: float, divisor: int = 8, *, round_limit: float = 0.9) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never below ``divisor`` and
    never more than 10% below ``value`` (then one ``divisor`` up).

    The rule of timm's ``make_divisible`` (``timm/layers/helpers.py``) and of the MobileNet /
    EfficientNet reference code; re-implemented because the library never imports timm.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def stem_widths(arch: ArchSpec) -> tuple[int, int]:
    """(width of the first two 3x3 stem convs, stem output width) after the multiplier.

    Deep stem: ``stem_width`` (32) and ``2 * stem_width`` (64), as timm's ``stem_type='deep'``.
    Classic stem (``resnet_d=False``): one 7x7 conv of 64 channels (``stem_width`` is unused).
    """
    if not arch.resnet_d:
        out = make_divisible(64 * arch.width)
        return out, out
    stem = arch.stem_width * arch.width
    return make_divisible(stem), make_divisible(2 * stem)


def stage_planes(arch: ArchSpec) -> tuple[int, ...]:
    """Bottleneck inner width of each stage (64, 128, 256, 512 at width 1), rounded to 8.

    The width multiplier is the TF2 Model Garden's ``depth_multiplier`` (``backbones/resnet.py``):
    it scales every conv width. Block output channels are ``EXPANSION`` times these.
    """
    return tuple(make_divisible(w * arch.width) for w in STAGE_WIDTHS)


def stage_drop_rates(rate: float, num_stages: int = 4) -> tuple[float, ...]:
    """Stochastic-depth drop rate of each stage: ``rate * (g + 2) / (num_stages + 1)``.

    The official rule (tensorflow/tpu ``resnet_layers.get_drop_connect_rate`` with block groups
    numbered 2..5 of 5; TF2 ``get_stochastic_depth_rate(init, i + 2, 5)``): 0.4r, 0.6r, 0.8r, 1.0r
    for four stages, the same rate for every block of a stage. (timm ramps linearly per block.)
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"stochastic_depth: {rate} is out of range; allowed: 0 <= rate < 1")
    return tuple(rate * (g + 2) / (num_stages + 1) for g in range(num_stages))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> scale the input.

    Official code: ``resnet_layers.squeeze_excitation`` with ``in_filters = 4 * filters`` and
    ``num_reduced_filters = max(1, int(in_filters * se_ratio))``; timm ``SEModule`` (names
    ``fc1``/``fc2``). ``reduced`` is rounded to a multiple of 8 by the caller; at ratio 0.25 it
    equals the block's planes, which are already multiples of 8.
    """

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """``x`` times its gate; ``keep`` (per sample, ``(N, 1, 1, 1)``) is an extra factor folded
        into the small ``(N, C, 1, 1)`` gate: the block passes stochastic depth's mask here so that
        dropping costs no full-size multiply (and no full-size tensor) forward or backward."""
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.fc2(self.act(self.fc1(scale))))
        if keep is not None:
            scale = scale * keep
        return x * scale


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample in training.

    The official ``resnet_layers.drop_connect`` and torchvision's ``stochastic_depth(mode="row")``,
    which this draws exactly as (same random stream): a Bernoulli(1 - p) per sample, kept
    branches scaled by 1 / (1 - p), nothing in eval mode. Unlike those it hands out the
    ``(N, 1, 1, 1)`` mask (:meth:`mask`) so that :class:`Bottleneck` can fold it into the SE gate
    instead of multiplying the full feature map once more (timm's ``DropPath`` does that
    multiply, and allocates its result).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def mask(self, x: Tensor) -> Tensor | None:
        """The scaled keep mask for ``x``'s samples, or ``None`` when nothing can be dropped (eval
        mode, ``p == 0``): then the block skips the multiply and draws no random numbers."""
        if not self.training or self.p == 0.0:
            return None
        survival = 1.0 - self.p
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(survival)
        return keep.div_(survival) if survival > 0.0 else keep

    def forward(self, x: Tensor) -> Tensor:
        keep = self.mask(x)
        return x if keep is None else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _shortcut(in_channels: int, out_channels: int, stride: int, *, resnet_d: bool) -> nn.Sequential:
    """Projection shortcut of the first block of a stage.

    ResNet-D (He et al. 2019 "Bag of Tricks"; official ``resnetd_shortcut``): 2x2 avg-pool with the
    stride, then a stride-1 1x1 conv + BN; the pool is an ``Identity`` when the stride is 1, so the
    parameter names (``downsample.1``, ``downsample.2``) match timm's ``downsample_avg``. The pool
    uses ``ceil_mode=True, count_include_pad=False``, the PyTorch equivalent of TF's SAME padding
    for odd sizes. Classic ResNet (torchvision): a strided 1x1 conv + BN (``downsample.0/1``).
    """
    if not resnet_d:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            _bn(out_channels),
        )
    pool: nn.Module = nn.Identity()
    if stride > 1:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(
        pool,
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
        _bn(out_channels),
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, "v1.5") -> 1x1, then SE, stochastic depth, residual add, ReLU.

    Official ``resnet_model.bottleneck_block``; same order and names as timm's ``Bottleneck``.
    ``bn3`` is the last BN of the branch: :meth:`zero_init_last` zeroes its gamma so that every
    block starts as the identity (Goyal et al. 2017; official ``init_zero=True``).
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        se_reduced: int = 0,
        downsample: nn.Module | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = _bn(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduced) if se_reduced > 0 else None
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_rate)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        # The branch allocates what timm's block allocates and no more (same function, same
        # weights; tests/models compare outputs and gradients with the plain formulation):
        # the stochastic-depth mask rides on the (N, C, 1, 1) SE gate, and the residual add and
        # the last ReLU work in place. Autograd allows both: no backward formula of BN or of a
        # product needs its own output, and its version counter would raise if one did.
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        keep = self.drop_path.mask(out)
        if self.se is not None:
            out = self.se(out, keep)
        elif keep is not None:
            out = out.mul_(keep)
        # After the branch, as timm: the projection's output is not held while the branch runs.
        out += x if self.downsample is None else self.downsample(x)
        return self.act3(out)


class ResNetRS(nn.Module):
    """ResNet-RS (``resnet_d=True``) or a classic bottleneck ResNet (``resnet_d=False``).

    ``arch.resolution`` does not change the module (global pooling makes the net
    resolution-agnostic); it is kept on ``self.arch`` for complexity and latency measurements.
    """

    def __init__(
        self, arch: ArchSpec, *, dropout: float = 0.0, stochastic_depth: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: {dropout} is out of range; allowed: 0 <= dropout < 1")
        self.arch = arch
        stem_mid, stem_out = stem_widths(arch)

        # Stem. The names follow timm so that checkpoints load unchanged ("maxpool" holds the
        # stride-2 conv that replaces the max pool in ResNet-RS; timm keeps that name too).
        self.conv1: nn.Module
        self.maxpool: nn.Module
        if arch.resnet_d:
            self.conv1 = nn.Sequential(
                nn.Conv2d(arch.in_channels, stem_mid, 3, stride=2, padding=1, bias=False),
                _bn(stem_mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_mid, stem_mid, 3, stride=1, padding=1, bias=False),
                _bn(stem_mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_mid, stem_out, 3, stride=1, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(arch.in_channels, stem_out, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(stem_out)
        self.act1 = nn.ReLU(inplace=True)
        if arch.resnet_d:
            self.maxpool = nn.Sequential(
                nn.Conv2d(stem_out, stem_out, 3, stride=2, padding=1, bias=False),
                _bn(stem_out),
                nn.ReLU(inplace=True),
            )
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # Four stages; stride 1 for the first (the stem already downsampled by 4), then 2.
        in_channels = stem_out
        drop_rates = stage_drop_rates(stochastic_depth, len(arch.layout))
        stages: list[nn.Sequential] = []
        stage_args = zip(stage_planes(arch), arch.layout, drop_rates, strict=True)
        for g, (planes, blocks, rate) in enumerate(stage_args):
            stride = 1 if g == 0 else 2
            out_channels = planes * EXPANSION
            se_reduced = make_divisible(out_channels * arch.se_ratio) if arch.se_ratio > 0 else 0
            layer: list[nn.Module] = []
            for b in range(blocks):
                downsample = None
                if b == 0 and (stride != 1 or in_channels != out_channels):
                    downsample = _shortcut(
                        in_channels, out_channels, stride, resnet_d=arch.resnet_d
                    )
                layer.append(
                    Bottleneck(
                        in_channels,
                        planes,
                        stride=stride if b == 0 else 1,
                        se_reduced=se_reduced,
                        downsample=downsample,
                        drop_rate=rate,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        # Head: global average pool -> dropout -> linear (official resnet_model: dropout before
        # the final dense layer).
        self.num_features = in_channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels, arch.num_classes)

        self.init_weights()

    def init_weights(self) -> None:
        """He-normal (fan-out) convs as timm/torchvision; BN gamma 1 / beta 0 except the last BN of
        each branch (gamma 0, official ``init_zero``); head N(0, 0.01) with zero bias (official
        ``resnet_model``: ``tf.random_normal_initializer(stddev=.01)`` for the final dense).

        Skipped on the ``meta`` device: there are no values to set, and the random initialisers
        would cost more than the rest of a meta build (complexity counting builds there)."""
        if self.fc.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                m.zero_init_last()
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @property
    def stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    @property
    def stage_blocks(self) -> tuple[tuple[Bottleneck, ...], ...]:
        """The blocks of each stage, typed (for inspection, hooks and per-stage settings)."""
        return tuple(tuple(b for b in stage if isinstance(b, Bottleneck)) for stage in self.stages)

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.forward_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        return self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(arch: ArchSpec, *, dropout: float = 0.0, stochastic_depth: float = 0.0) -> ResNetRS:
    """Build the network an ArchSpec describes (fresh weights, train mode, current default device).

    ``dropout`` (before the classifier) and ``stochastic_depth`` (the rate ``r`` of the last stage;
    stages get 0.4r, 0.6r, 0.8r, 1.0r) come from the ``RecipeSpec``, not the ArchSpec: both are
    identities in eval mode and add no parameters, so they change training, not inference cost,
    latency or memory, and the ArchSpec key (the latency-cache key) must not depend on them.

    Build under ``torch.device("meta")`` to count parameters and FLOPs without allocating
    weights (``rs_search.models.complexity`` does).
    """
    return ResNetRS(arch, dropout=dropout, stochastic_depth=stochastic_depth)
