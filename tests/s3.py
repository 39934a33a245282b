"""An S3-compatible server for the tests: moto in server mode, a stand-in for AWS S3 (or MinIO, R2).

``python -m moto.server`` on a free 127.0.0.1 port, in its own process group, stopped at the end. It
implements the calls the registry makes, including conditional writes (``If-None-Match: *``), which is
what the registry's create-if-absent relies on. Clients find it through the standard AWS variables
(``env()``: ``AWS_ENDPOINT_URL``, dummy keys, a region), which botocore and so s3fs read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from flows.stack import free_port


class S3Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server with botocore/s3fs, and nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "evergreen-tests",
            "AWS_SECRET_ACCESS_KEY": "evergreen-tests",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket(self, prefix: str = "evergreen") -> str:
        """A new, empty bucket's URL (``s3://name``)."""
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, **_credentials(self.env())).create_bucket(Bucket=name)
        return f"s3://{name}"


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def unavailable() -> str | None:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        return f"moto[server] is not installed ({exc}); pip install -e .[dev]"
    return None


@contextlib.contextmanager
def running_server(timeout: float = 60.0) -> Iterator[S3Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:  # the port accepting connections is the server's only ready signal
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port} (exit code {process.poll()})") from None
                time.sleep(0.1)
        yield S3Server(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
