"""S3-compatible object storage for BatchJob input and output, through obstore.

obstore (Rust's object_store behind a Python API) streams GETs in chunks, turns an iterator
into a multipart upload by itself, and installs as one wheel with no dependency tree;
aiobotocore pins botocore and aiohttp versions against the rest of the operator, and boto3
is blocking. Its blocking calls are used, each in a worker thread the event loop awaits:
its ``*_async`` calls complete an asyncio future from a tokio thread, which can still be
inside the interpreter when the process exits, and Python 3.11 then aborts the process
(SIGABRT, exit 134: a dispatcher Job that finished its work would be counted failed).
A worker thread ends inside the call, and ``asyncio.run`` waits for it. Every error the
store returns is translated here into one that names the field a user has to fix
(``spec.objectStore.credentialsSecret``, ``spec.input.s3.url``), or left as an OSError
when it is transient (a crash-restart retries).
The same calls serve a folder of the operator's Batch API volume (obstore's LocalStore), so
the cluster Batch API and the output parts work alike on either.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore, S3Store

from hygen_operator.resources import ObjectStore, S3Ref

ACCESS_KEY_ENV = "HYGEN_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "HYGEN_S3_SECRET_ACCESS_KEY"
SECRET_KEYS = {ACCESS_KEY_ENV: "accessKeyId", SECRET_KEY_ENV: "secretAccessKey"}
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")


class StoreConfigError(Exception):
    """The store refuses us for good (credentials, bucket): names the field to fix."""


@dataclass(frozen=True)
class Bucket:
    """One bucket of the job's store, with the fields to blame for its errors; or a folder
    of the operator's Batch API volume (``root`` set), through the same calls."""

    store: S3Store | LocalStore
    bucket: str
    endpoint: str
    secret: str
    root: Path | None = None

    def blame(self, e: Exception, field: str, key: str) -> Exception:
        """``e`` as a StoreConfigError naming the field, or unchanged when transient."""
        if self.root is not None:  # a local disk has no credentials or buckets to blame
            return e
        text = str(e)
        if "NoSuchBucket" in text:
            return StoreConfigError(
                f"{field}: bucket {self.bucket!r} does not exist at {self.endpoint}"
            )
        if isinstance(e, PermissionError) or any(c in text for c in CREDENTIAL_CODES):
            code = next((c for c in CREDENTIAL_CODES if c in text), "403")
            return StoreConfigError(
                f"spec.objectStore.credentialsSecret: {self.endpoint} refused the credentials "
                f"of Secret {self.secret!r} for s3://{self.bucket}/{key} ({code})"
            )
        return e


def open_bucket(cfg: ObjectStore, bucket: str, env: dict[str, str] | None = None) -> Bucket:
    """The bucket, with credentials from the environment the dispatcher Job's Secret fills."""
    env = dict(os.environ if env is None else env)
    missing = [SECRET_KEYS[k] for k in SECRET_KEYS if not env.get(k)]
    if missing:
        raise StoreConfigError(
            f"spec.objectStore.credentialsSecret: Secret {cfg.credentials_secret!r} is missing "
            f"or has no {' / '.join(missing)}"
        )
    kwargs: dict[str, Any] = {}
    if cfg.endpoint:
        kwargs["endpoint"] = cfg.endpoint
    store = S3Store(
        bucket,
        region=cfg.region,
        access_key_id=env[ACCESS_KEY_ENV],
        secret_access_key=env[SECRET_KEY_ENV],
        client_options={"allow_http": bool(cfg.endpoint and cfg.endpoint.startswith("http:"))},
        retry_config={
            "max_retries": 3,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=30),
        },
        **kwargs,
    )
    endpoint = cfg.endpoint or f"s3.{cfg.region}.amazonaws.com"
    return Bucket(store, bucket, endpoint, cfg.credentials_secret)


def open_local(root: Path) -> Bucket:
    """A folder of the operator's Batch API volume, used like a bucket: objects are files,
    each written whole (staged, then renamed) and fsynced before the call returns."""
    root.mkdir(parents=True, exist_ok=True)
    store = LocalStore(prefix=root, mkdir=True)
    return Bucket(store, root.name, f"the operator's volume ({root})", "", root)


def _fsync(root: Path, key: str) -> None:
    """Make a written file and its folder entry durable (a rename alone is not)."""
    path = root / key
    for p, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(p, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def exists(b: Bucket, key: str, field: str) -> bool:
    """Whether the object is there. A HEAD of a missing bucket says only 404, so a 404
    is checked with a LIST, whose error body names NoSuchBucket."""
    try:
        await asyncio.to_thread(obstore.head, b.store, key)
        return True
    except FileNotFoundError:
        await list_keys(b, key.rsplit("/", 1)[0] if "/" in key else "", field)
        return False
    except Exception as e:
        raise b.blame(e, field, key) from e


async def list_keys(b: Bucket, prefix: str, field: str) -> list[str]:
    """Every key under ``prefix`` (a folder: obstore lists ``prefix/``), sorted."""

    def collect() -> list[Any]:
        return obstore.list(b.store, prefix=prefix or None).collect()

    try:
        metas = await asyncio.to_thread(collect)
    except Exception as e:
        raise b.blame(e, field, prefix) from e
    return sorted(m["path"] for m in metas)


async def read_chunks(b: Bucket, key: str, field: str) -> AsyncIterator[bytes]:
    """The object's bytes in chunks, never all at once."""
    try:
        result = await asyncio.to_thread(obstore.get, b.store, key)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise b.blame(e, field, key) from e
    stream = iter(result.stream(min_chunk_size=1 << 20))
    while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
        yield bytes(chunk)


_END = object()


def _pulled(chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """``chunks`` for a blocking call in a worker thread: each chunk is awaited on ``loop``."""

    async def step() -> object:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return _END

    while (chunk := asyncio.run_coroutine_threadsafe(step(), loop).result()) is not _END:
        yield chunk  # type: ignore[misc]


async def put(b: Bucket, key: str, data: bytes | AsyncIterator[bytes], field: str) -> None:
    """Write the object whole (an async iterator is uploaded in multipart chunks)."""
    body: bytes | Iterator[bytes] = (
        data if isinstance(data, bytes) else _pulled(data, asyncio.get_running_loop())
    )
    try:
        await asyncio.to_thread(obstore.put, b.store, key, body)
    except Exception as e:
        raise b.blame(e, field, key) from e
    finally:
        if not isinstance(data, bytes) and hasattr(data, "aclose"):
            await data.aclose()  # an upload that failed half-way leaves no generator running
    if b.root is not None:
        await asyncio.to_thread(_fsync, b.root, key)


async def delete(b: Bucket, keys: list[str], field: str) -> None:
    """Delete the objects in order; one already gone is no error."""
    if not keys:
        return
    try:
        if b.root is None:  # S3 deletes in one request and ignores missing keys
            await asyncio.to_thread(obstore.delete, b.store, keys)
            return
        for k in keys:  # a local store stops at the first missing one
            try:
                await asyncio.to_thread(obstore.delete, b.store, k)
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    except Exception as e:
        raise b.blame(e, field, keys[0]) from e


def bucket_of(cfg: ObjectStore | None, ref: S3Ref, env: dict[str, str] | None = None) -> Bucket:
    assert cfg is not None, "validated: objectStore is required with s3"
    return open_bucket(cfg, ref.bucket, env)
