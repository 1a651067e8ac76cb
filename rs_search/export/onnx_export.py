"""ONNX export of a candidate, checked against PyTorch with onnxruntime (optional extra ``onnx``).

The model is built by ``rs_search.models.build_model`` in eval mode (dropout and stochastic depth
are identities there), exported with TorchScript-based ``torch.onnx.export(dynamo=False)`` (no
``onnxscript`` needed), opset 17, input ``images`` (N, C, H, W) float32 with a dynamic batch and
output ``logits``. The check runs onnxruntime's CPU provider on random images and requires the
logits to match PyTorch's within ``atol + rtol * |logit|`` (1e-4 each by default).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    import torch

    from rs_search.specs import Candidate

__all__ = ["OPSET", "OnnxCheck", "OnnxUnavailable", "export_onnx", "require_onnx"]

OPSET = 17


class OnnxUnavailable(RsSearchError):
    """``--onnx`` without the optional dependencies."""


@dataclass(frozen=True, kw_only=True)
class OnnxCheck:
    max_abs_diff: float
    batch: int
    opset: int
    onnx_version: str
    onnxruntime_version: str


def require_onnx() -> tuple[str, str]:
    """(onnx version, onnxruntime version); ``OnnxUnavailable`` with the install line if absent."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise OnnxUnavailable(
            "--onnx needs the optional dependencies: "
            "pip install 'rs-search[onnx]' (onnx, onnxruntime)"
        ) from None
    return str(onnx.__version__), str(onnxruntime.__version__)


def export_onnx(
    candidate: Candidate,
    path: Path,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    batch: int = 2,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    seed: int = 0,
) -> OnnxCheck:
    """Write ``candidate``'s network (with ``state_dict`` when given) to ``path`` as ONNX and
    check onnxruntime's logits against PyTorch's; a mismatch is an ``RsSearchError``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from rs_search.models import build_model

    onnx_version, ort_version = require_onnx()
    arch, recipe = candidate.arch, candidate.recipe
    model = build_model(arch, dropout=recipe.dropout, stochastic_depth=recipe.stochastic_depth)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model = model.float().eval()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(
        batch, arch.in_channels, arch.resolution, arch.resolution, generator=generator
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (images,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    with torch.no_grad():
        expected = model(images).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": images.numpy()})
    diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise RsSearchError(
            f"{path.name}: onnxruntime logits differ from PyTorch's by up to "
            f"{diff:.3g} (allowed: {atol:g} + {rtol:g} x |logit|)"
        )
    return OnnxCheck(
        max_abs_diff=diff,
        batch=batch,
        opset=OPSET,
        onnx_version=onnx_version,
        onnxruntime_version=ort_version,
    )
