"""A real S3 API server for the tests: moto in server mode on 127.0.0.1, with signature
checking on (a wrong secret is refused with 403, as a real store refuses it)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int = 0

    def client(self, secret: str | None = None):  # boto3: the tests' own view of the store
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=secret or self.secret_key,
        )  # fmt: skip

    def bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """The dispatcher's credentials, as its Job's Secret gives them."""
        return {"HYGEN_S3_ACCESS_KEY_ID": self.access_key,
                "HYGEN_S3_SECRET_ACCESS_KEY": self.secret_key}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    # auth is off for the first 3 requests: the IAM user, its policy and its access key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="boot", aws_secret_access_key="boot")  # fmt: skip
        iam.create_user(UserName="hygen")
        policy = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
        )
        iam.put_user_policy(UserName="hygen", PolicyName="all", PolicyDocument=policy)
        key = iam.create_access_key(UserName="hygen")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
