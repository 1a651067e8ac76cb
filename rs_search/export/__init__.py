"""Export Pareto-optimal trials: candidate YAMLs with metrics and provenance, weights, ONNX.

``export_study`` is the entry point (``rs-search export``); ``front`` decides what is exported
and why, ``weights`` finds a trial's final checkpoint, ``onnx_export`` writes and checks ONNX
(optional extra ``onnx``), ``atomic`` makes the output directory appear whole or not at all,
``remeasure`` checks each exported latency against a fresh measurement (``--remeasure``).
"""

from rs_search.export.remeasure import LatencyCheck, Remeasure
from rs_search.export.study_export import ExportReport, NoFinishedTrial, export_study

__all__ = ["ExportReport", "LatencyCheck", "NoFinishedTrial", "Remeasure", "export_study"]
