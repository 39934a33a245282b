"""The sequence data kind (``ingest.kind: sequence``; see ``pipeline/kinds/base.py`` for the contract).

Data: a long table, one row per series and time step, with numeric value columns; the default is real
half-hourly electricity demand with temperature (``fpp2::elecdemand``, Victoria, 2014). Each stage's
output folder holds the long table as Parquet plus ``schema.json`` (``"kind": "sequence"``, the column
roles and the windowing from ``ingest``), so later stages read the windowing from their input
folder, as they read the kind, and never re-declare those params.

Windows: ``lookback`` consecutive steps of every input feature, x float32 [L, F]. For ``task: forecast``
the target is the next ``horizon`` values of ``ingest.target``, y [H]; for ``task: classify`` it is the
label of its series (a column constant per series). See ``windows.py`` for how they meet the splits.

Modules: ``data`` (schema, read/write), ``ingest``, ``clean``, ``split``, ``windows``, ``augment``,
``encoder``, ``train`` (prepare), ``metrics`` (forecast errors), ``evaluate``, ``export`` (with the int8
twin); ``stages`` gathers the stage functions. No torch: ``runtime`` (the ``KindRuntime`` functions:
the gate's scores, the service's hooks in ``records``, ``landing``, the drift frame in ``drift``, and
``steps``: the production model on new steps, for performance drift and a classifier's predicted class).
"""

from __future__ import annotations

from pipeline.kinds.base import Kind, KindStages
from pipeline.kinds.sequence import runtime


def _stages() -> KindStages:
    from pipeline.kinds.sequence import stages

    return stages


KIND = Kind(name="sequence", runtime=runtime, load_stages=_stages)
