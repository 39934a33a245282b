"""The tokeniser inside the ONNX graph, from operators onnxruntime ships (no torch, no extra library).

raw text string [N]
  -> ``StringNormalizer`` (A-Z -> a-z, locale "C": ASCII only, as ``tokenizer.split_tokens``; any
     machine has that locale, where "en_US.UTF-8", the operator's default, is often missing)
  -> ``com.microsoft.Tokenizer`` with ``tokenexp`` = the tokeniser's pattern (RE2; every match a token)
     -> tokens string [N, T], padded with "<pad>" (T = the batch's most tokens; 0 when all are empty)
  -> ``ai.onnx.ml.LabelEncoder``: token -> id (unknown: 1, "<pad>": 0) -> int64 [N, T]
  -> [CLS] (id 2) in front, cut or padded (id 0) to ``max_length`` -> ``ids`` int64 [N, max_length],
     exactly ``TextTokenizer.transform``

The unit tests check it against ``TextTokenizer.ids`` on awkward strings (case, punctuation, URLs,
emoji, empty text, unseen words); the export checks the whole model against PyTorch on the test texts.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.kinds.text.data import TEXT_INPUT
from pipeline.kinds.text.tokenizer import CLS_ID, PAD, PAD_ID, SPECIALS, UNK_ID, TextTokenizer

MS_DOMAIN = "com.microsoft"
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # LabelEncoder-2: string keys -> int64 values
IDS = "prep/ids"  # the graph's token ids, the network's input


def _const(name: str, values: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values, name=name))


def tokenizer_nodes(tokenizer: TextTokenizer, output: str = IDS) -> list[onnx.NodeProto]:
    """The nodes from the ``text`` input to ``output`` (ids int64 [N, max_length])."""
    keys = [PAD, *tokenizer.vocab]
    values = [PAD_ID, *range(len(SPECIALS), len(SPECIALS) + len(tokenizer.vocab))]
    nodes = []
    text = TEXT_INPUT
    if tokenizer.lowercase:
        nodes.append(
            helper.make_node(
                "StringNormalizer", [TEXT_INPUT], ["prep/lower"], case_change_action="LOWER", is_case_sensitive=1, locale="C"
            )
        )
        text = "prep/lower"
    nodes += [
        helper.make_node(
            "Tokenizer",
            [text],
            ["prep/tokens"],
            domain=MS_DOMAIN,
            mark=0,
            mincharnum=1,
            pad_value=PAD,
            tokenexp=tokenizer.pattern,
        ),
        helper.make_node(
            "LabelEncoder",
            ["prep/tokens"],
            ["prep/token_ids"],
            domain=ML_DOMAIN,
            keys_strings=keys,
            values_int64s=values,
            default_int64=UNK_ID,
        ),
        # [CLS] column [N, 1] in front: the batch size from the texts, the value 2.
        helper.make_node("Shape", [TEXT_INPUT], ["prep/n"], start=0, end=1),
        _const("prep/one", np.array([1], dtype=np.int64)),
        helper.make_node("Concat", ["prep/n", "prep/one"], ["prep/cls_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["prep/cls_shape"],
            ["prep/cls"],
            value=numpy_helper.from_array(np.array([CLS_ID], dtype=np.int64)),
        ),
        helper.make_node("Concat", ["prep/cls", "prep/token_ids"], ["prep/all_ids"], axis=1),
        _const("prep/starts", np.array([0], dtype=np.int64)),
        _const("prep/ends", np.array([tokenizer.max_length], dtype=np.int64)),
        _const("prep/axes", np.array([1], dtype=np.int64)),
        helper.make_node("Slice", ["prep/all_ids", "prep/starts", "prep/ends", "prep/axes"], ["prep/cut_ids"]),
        # Padded to max_length, as in training: the exported attention's reshapes hold the traced length.
        helper.make_node("Shape", ["prep/cut_ids"], ["prep/length"], start=1, end=2),
        helper.make_node("Sub", ["prep/ends", "prep/length"], ["prep/missing"]),
        _const("prep/no_pads", np.array([0, 0, 0], dtype=np.int64)),
        helper.make_node("Concat", ["prep/no_pads", "prep/missing"], ["prep/pads"], axis=0),
        _const("prep/pad_id", np.array(PAD_ID, dtype=np.int64)),
        helper.make_node("Pad", ["prep/cut_ids", "prep/pads", "prep/pad_id"], [output], mode="constant"),
    ]
    return nodes


def token_types() -> list[onnx.ValueInfoProto]:
    """The Tokenizer's output type, declared: onnx knows no com.microsoft schema, and its shape inference
    crashes (a segmentation fault in onnx 1.2x) on the LabelEncoder reading an input of unknown type."""
    return [helper.make_tensor_value_info("prep/tokens", TensorProto.STRING, ["N", "T"])]


def tokenizer_graph(tokenizer: TextTokenizer, opset: int, ir_version: int | None = None) -> onnx.ModelProto:
    """A model of its own: ``text`` string [N] -> ``prep/ids`` int64 [N, max_length]."""
    graph = helper.make_graph(
        tokenizer_nodes(tokenizer),
        "tokenize",
        [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info(IDS, TensorProto.INT64, ["N", tokenizer.max_length])],
        value_info=token_types(),
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    if ir_version is not None:
        model.ir_version = ir_version
    return model
