"""Shared fixtures: a real moto S3 server, and remotes on both back ends.

* ``moto_server`` (session): ``python -m moto.server`` on 127.0.0.1, a free
  port, with bucket ``MOTO_BUCKET`` created; fake AWS credentials in the
  environment for the whole session. Killed at the end.
* ``remote_url`` (parametrized ``file`` / ``s3``): a fresh, empty remote URL
  (a temp directory, or a unique prefix in the moto bucket). For ``s3`` it
  also sets ``AWS_ENDPOINT_URL`` for the test, so ``open_remote(url)`` and
  anything taking a URL string reach moto.
* ``remote``: ``open_remote(remote_url)``, closed after the test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tieredindex.remote import Remote

MOTO_BUCKET = "tix-test"
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclasses.dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    bucket: str
    client: S3Client
    log_path: Path

    def new_bucket(self) -> str:
        """Create and return another empty bucket."""
        name = f"tix-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def _fake_aws_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in _UNSET_AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in _FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_server(_fake_aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    import boto3
    from botocore.config import Config

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(
                connect_timeout=2,
                read_timeout=30,
                retries={"total_max_attempts": 1, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer in 60 s: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        client.create_bucket(Bucket=MOTO_BUCKET)
        yield MotoServer(endpoint, MOTO_BUCKET, client, log_path)
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(params=["file", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "file":
        return (tmp_path / "remote").as_uri()
    server: MotoServer = request.getfixturevalue("moto_server")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
    return f"s3://{server.bucket}/t-{uuid.uuid4().hex[:16]}/"


@pytest.fixture
def remote(remote_url: str) -> Iterator[Remote]:
    from tieredindex.remote import open_remote

    r = open_remote(remote_url)
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):
            r.close()


@pytest.fixture
def prompt_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deletes at its first pass, not once a file has looked
    expired for ``RETENTION_CONFIRM_S`` (five minutes)."""
    import tieredindex.store

    monkeypatch.setattr(tieredindex.store, "RETENTION_CONFIRM_S", 0.0)
