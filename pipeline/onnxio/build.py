"""Building ONNX graphs: the network via the torch exporter, the shared post-processing (softmax -> probabilities, label), merging."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

# The graph's names live with the card (torch-free: ingest checks feature names against them); re-exported here.
from pipeline.onnxio.card import LABEL as LABEL
from pipeline.onnxio.card import NET_PREFIX as NET_PREFIX
from pipeline.onnxio.card import PROBABILITIES as PROBABILITIES

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3


class Probabilities(torch.nn.Module):
    """The network followed by softmax: encoded tensors in, probabilities out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x_num, x_cat), dim=1)


def torch_graph(
    module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str], opset: int
) -> onnx.ModelProto:
    """A module as ONNX with the legacy TorchScript exporter (no onnxscript needed, no side files),
    every input and output with a dynamic batch axis 0."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see docstring); its deprecation notice is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Shape checks inside nn.MultiheadAttention are constants for a fixed model: not a tracing hazard.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Exporting a batch-first LSTM/GRU warns that other batch sizes may misbehave; the parity checks run other sizes.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*", category=UserWarning)
        torch.onnx.export(
            module.eval(),
            example,
            # torch annotates f as a path, but the legacy exporter writes to a file-like object too (its _export says so).
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: "N"} for name in [*input_names, *output_names]},
        )
    return onnx.load_model_from_string(buffer.getvalue())


def one_opset_per_domain(model: onnx.ModelProto) -> None:
    """merge_models concatenates opset imports; keep one per domain (tools such as the quantizer insist)."""
    unique = {(o.domain or ""): o.version for o in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in unique.items())


def const(name: str, values: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values, name=name))


def empty_batch(like: str, name: str, dtype) -> list[onnx.NodeProto]:
    """Nodes making an [N, 0] tensor, N taken from input ``like``."""
    return [
        helper.make_node("Shape", [like], [f"prep/{name}_like_shape"], start=0, end=1),
        const(f"prep/{name}_zero", np.array([0], dtype=np.int64)),
        helper.make_node("Concat", [f"prep/{name}_like_shape", f"prep/{name}_zero"], [f"prep/{name}_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", [f"prep/{name}_shape"], [name], value=numpy_helper.from_array(np.zeros(1, dtype=dtype))
        ),
    ]


def postprocessing_graph(classes: tuple[str, ...], opset: int, ir_version: int) -> onnx.ModelProto:
    """Probabilities -> (probabilities, label) with the label looked up from the class names."""
    names = np.array(classes, dtype=object)
    nodes = [
        helper.make_node("Identity", [f"{NET_PREFIX}{PROBABILITIES}"], [PROBABILITIES]),
        helper.make_node("ArgMax", [f"{NET_PREFIX}{PROBABILITIES}"], ["post/index"], axis=1, keepdims=0),
        const("post/classes", names),
        helper.make_node("Gather", ["post/classes", "post/index"], [LABEL], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "postprocess",
        [helper.make_tensor_value_info(f"{NET_PREFIX}{PROBABILITIES}", TensorProto.FLOAT, ["N", len(classes)])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", len(classes)]),
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["N"]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def finish_graph(merged: onnx.ModelProto, description: str) -> onnx.ModelProto:
    """A merged graph made tidy: one opset import per domain (merge_models concatenates them, and tools
    such as the quantizer insist), the project's graph name and a description."""
    one_opset_per_domain(merged)
    merged.graph.name = "evergreen"
    merged.doc_string = description
    return merged
