"""A real S3 API server for the tests: moto in server mode on 127.0.0.1, with signature
checking on (a wrong secret is refused with 403, as a real store refuses it).

moto runs from its own venv (`make install` builds ``.venv-s3``; ``$HYGEN_S3_PYTHON``
overrides): its botocore pins python-dateutil<3, the operator's kubernetes client needs
>=3. The IAM user and buckets are made there with boto3; the tests read and write objects
with obstore, the client the product uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

from hygen_pod.dev.pod_process import free_port

ROOT = Path(__file__).resolve().parents[2]
S3_PYTHON = Path(os.environ.get("HYGEN_S3_PYTHON", ROOT / ".venv-s3" / "bin" / "python"))

_BOOT = """
import json, sys, boto3
ep = sys.argv[1]
iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id="boot", aws_secret_access_key="boot")
iam.create_user(UserName="hygen")
policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
iam.put_user_policy(UserName="hygen", PolicyName="all", PolicyDocument=policy)
key = iam.create_access_key(UserName="hygen")["AccessKey"]
print(json.dumps({k: key[k] for k in ("AccessKeyId", "SecretAccessKey")}))
"""
_BUCKET = """
import sys, boto3
ep, key, secret, name = sys.argv[1:]
boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=key,
             aws_secret_access_key=secret).create_bucket(Bucket=name)
"""


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int = 0

    def bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        args = [self.endpoint, self.access_key, self.secret_key, name]
        subprocess.run([str(S3_PYTHON), "-c", _BUCKET, *args], check=True, timeout=60)
        return name

    def env(self) -> dict[str, str]:
        """The dispatcher's credentials, as its Job's Secret gives them."""
        return {"HYGEN_S3_ACCESS_KEY_ID": self.access_key,
                "HYGEN_S3_SECRET_ACCESS_KEY": self.secret_key}  # fmt: skip

    def store(self, bucket: str) -> S3Store:
        return S3Store(
            bucket, endpoint=self.endpoint, region="us-east-1", access_key_id=self.access_key,
            secret_access_key=self.secret_key, client_options={"allow_http": True},
        )  # fmt: skip

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        """Write an object (a Path is streamed up in multipart chunks)."""
        if isinstance(data, Path):
            with data.open("rb") as f:
                obstore.put(self.store(bucket), key, f)
        else:
            obstore.put(self.store(bucket), key, data)

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(obstore.get(self.store(bucket), key).bytes())

    def keys(self, bucket: str) -> list[str]:
        return sorted(m["path"] for m in obstore.list(self.store(bucket)).collect())


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    if not S3_PYTHON.exists():
        raise RuntimeError(f"no S3 test server: {S3_PYTHON} is missing; run `make install`")
    port = free_port()
    # auth is off for the first 3 requests: the IAM user, its policy and its access key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(
        [str(S3_PYTHON), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        endpoint = f"http://127.0.0.1:{port}"
        out = subprocess.run(
            [str(S3_PYTHON), "-c", _BOOT, endpoint], check=True, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        key = json.loads(out.stdout.strip().splitlines()[-1])
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
