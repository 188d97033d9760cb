"""An S3 API server on localhost (moto's server mode) for the object-store tests.

`s3_server` starts one per test session on a free port; `s3_env` points the standard AWS
variables at it (fake credentials, AWS_ENDPOINT_URL) for the test and for the processes it
starts, and gives each test its own bucket. Tests skip when moto or s3fs is not installed.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

SECRET_KEY = "lensdb-test-secret-" + "9f3c7a1e5b"  # searched for in every written file and output
ACCESS_KEY = "LENSDBTESTACCESSKEY"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("moto server did not start")
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@dataclass
class S3Env:
    endpoint: str
    bucket: str
    env: dict[str, str]  # the variables set for this test (and its subprocesses)

    def url(self, prefix: str = "wh") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)

    def subprocess_env(self, **more) -> dict[str, str]:
        return {**os.environ, **self.env, **more}


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path) -> S3Env:
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
        "LENSDB_CACHE_DIR": str(tmp_path / "lensdb-cache"),
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = f"lensdb-{secrets.token_hex(4)}"
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return S3Env(endpoint=s3_server, bucket=bucket, env=env)
