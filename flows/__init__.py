"""Prefect flows that only orchestrate (retrain, drift monitor) and the stack that deploys them.

Importing the package turns telemetry off for this process and every process it starts, before
Prefect is imported: ``python -m flows.retrain`` run by hand starts Prefect's temporary server in
this process, and with analytics on that server's telemetry heartbeat fails offline and, sharing
its SQLite database, logs ``database is locked`` tracebacks. ``setdefault``: an operator who sets
one of these explicitly keeps their choice.
"""

import os

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "ORT_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
}

for _key, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_key, _value)
