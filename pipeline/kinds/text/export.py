"""Text export: tokeniser, network and label lookup as one ONNX graph that takes raw strings, verified.

Inputs:  ``paths.split``/test.parquet, ``paths.model``, ``paths.preprocessor``, ``paths.eval_metrics``.
Outputs: ``paths.onnx`` (+ its int8 twin), ``paths.model_card``, ``paths.export_report`` (PyTorch/ONNX parity).
Params:  ``export``.

The graph: ``text`` string [N] -> the tokeniser's operators (``graph.py``) -> ids -> network -> softmax
-> ``probabilities`` [N, K] and ``label`` [N]. The parity check feeds the raw test texts to the graph
and compares with PyTorch on the Python tokeniser's ids, so it checks the in-graph tokenisation too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch

from pipeline.core.errors import ExportError
from pipeline.core.io import SPLITS, file_sha256, read_json, split_file
from pipeline.kinds.text.data import TEXT_INPUT, read_split, read_text_schema
from pipeline.kinds.text.evaluate import predict_texts
from pipeline.kinds.text.graph import IDS, ML_DOMAIN, ML_OPSET, MS_DOMAIN, token_types, tokenizer_graph
from pipeline.kinds.text.tokenizer import TextTokenizer, load_tokenizer
from pipeline.models import load_model
from pipeline.onnxio.build import NET_PREFIX, PROBABILITIES, finish_graph, postprocessing_graph, torch_graph
from pipeline.onnxio.card import TextCard, TextInput, Tokenisation
from pipeline.onnxio.describe import CardFields, card_fields
from pipeline.onnxio.verify import publish, save_models, verify_feed
from pipeline.params import ExportParams, Paths


class Softmaxed(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(ids), dim=1)


def build_text_onnx(model: torch.nn.Module, tokenizer: TextTokenizer, opset: int) -> onnx.ModelProto:
    """One graph: raw texts string [N] -> tokeniser -> network -> ``probabilities`` [N, K] and ``label`` [N]."""
    # Traced on a batch with padding so the masks are exported as computed, not folded away.
    example = torch.from_numpy(tokenizer.transform(["", "a b c"]))
    net = torch_graph(Softmaxed(model), (example,), [IDS], [f"{NET_PREFIX}{PROBABILITIES}"], opset)
    prep = tokenizer_graph(tokenizer, opset, net.ir_version)
    merged = onnx.compose.merge_models(prep, net, io_map=[(IDS, IDS)])
    post = postprocessing_graph(tokenizer.classes, opset, merged.ir_version)
    merged = onnx.compose.merge_models(merged, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
    if not any(v.name == "prep/tokens" for v in merged.graph.value_info):
        merged.graph.value_info.extend(token_types())
    merged = finish_graph(merged, "Raw texts [N] -> tokens -> class probabilities and label (Evergreen)")
    domains = {o.domain for o in merged.opset_import}
    for domain, version in ((ML_DOMAIN, ML_OPSET), (MS_DOMAIN, 1)):
        if domain not in domains:
            merged.opset_import.append(onnx.helper.make_opsetid(domain, version))
    return merged


def text_card(tokenizer: TextTokenizer, common: CardFields) -> TextCard:
    """The model card of a text model: the shared fields plus the kind, the target and the one input."""
    text = TextInput(
        name=TEXT_INPUT,
        onnx_type="string",
        shape=("N",),
        tokenisation=Tokenisation(
            pattern=tokenizer.pattern,
            lowercase=tokenizer.lowercase,
            max_length=tokenizer.max_length,
            vocab_size=tokenizer.vocab_size,
        ),
    )
    return TextCard(**common, kind="text", target=tokenizer.target, inputs=(text,), text_column=tokenizer.text_column)


def run(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export the tokeniser, network and label lookup, verify the graph on the raw test texts against
    PyTorch, and write the model (and its int8 twin), the card and the parity report."""
    tokenizer = load_tokenizer(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)
    texts, labels = read_split(paths.split, "test", read_text_schema(paths.split))
    if not texts:
        raise ExportError(f"{split_file(paths.split, 'test')}: no test texts to verify the export on")

    model_bytes = build_text_onnx(model, tokenizer, cfg.opset).SerializeToString()
    feed = {TEXT_INPUT: np.array(texts, dtype=object)}
    parity = verify_feed(model_bytes, predict_texts(model, tokenizer, texts), feed, tokenizer.classes, cfg.tolerance)
    int8, hashes = save_models(model_bytes, cfg, paths, feed, np.array(labels, dtype=object))
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    common = card_fields(tokenizer.classes, checkpoint, read_json(paths.eval_metrics), hashes, parity, int8)
    return publish(text_card(tokenizer, common).to_dict(), parity, len(model_bytes), cfg, paths)
