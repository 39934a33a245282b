"""One thin module per DVC stage: read params, pick the kind, call it, report (``python -m pipeline.stages.<name>``)."""
