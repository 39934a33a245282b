"""Stage export: one self-contained ONNX model from raw inputs to predictions, verified against PyTorch.

The stage checks the graph, runs it with onnxruntime on the test split and fails unless it agrees with
the PyTorch path within ``export.tolerance``; it writes the model card beside the model and, with
``export.int8``, a dynamically quantised model with its measured accuracy.

Inputs:  ``paths.split``, ``paths.preprocessor``, ``paths.model``, ``paths.eval_metrics``
Outputs: ``paths.onnx``, ``paths.onnx_int8``, ``paths.model_card``, ``paths.export_report``
Params:  ``export``
Command: ``python -m pipeline.stages.export``
"""

from __future__ import annotations

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import ExportParams, Paths
from pipeline.stages.common import stage_main


def run(cfg: ExportParams, paths: Paths) -> Report:
    return kinds.get(kinds.data_kind(paths.split)).stages().export(cfg, paths)


def main() -> None:
    stage_main(lambda p: run(p.export, p.paths))


if __name__ == "__main__":
    main()
