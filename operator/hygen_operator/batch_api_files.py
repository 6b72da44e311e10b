"""The cluster Batch API's files, on the ServingSLO's object store or the operator's volume.

PREFIX is the storage's prefix on an object store, and ``<ServingSLO>`` in the namespace's
folder of the operator's Batch API volume (``--batch-api-dir``), where the same calls read
and write files (`object_store.open_local`). Each uploaded file is two objects under
``PREFIX/files/``: ``<id>.jsonl`` (the content,
streamed up as a multipart upload) and ``<id>.json`` (owner, name, size, time), written
after the content, so a crash mid-upload leaves no file anyone can see. A batch's results
are the output object of its BatchJob (``PREFIX/outputs/<batch id>.jsonl``); the OpenAI
output and error files are that object, split by whether each line succeeded.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hygen_operator import object_store
from hygen_operator.batch_io import result_ok
from hygen_operator.kube import SECRET, Kube
from hygen_operator.object_store import ACCESS_KEY_ENV, SECRET_KEY_ENV, SECRET_KEYS, Bucket
from hygen_operator.resources import BatchApi
from hygen_pod.contract.api import FileObject
from hygen_pod.contract.batch_input import split_lines

FIELD = "spec.batchApi.storage"


class TooLarge(Exception):
    """An upload over the size limit (413); its content is not kept."""


class FileNotThere(Exception):
    """No such file for this owner (404: another owner's file is not there either)."""


@dataclass(frozen=True)
class FileStore:
    """One ServingSLO's files and outputs."""

    bucket: Bucket
    api: BatchApi
    prefix: str

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def content_key(self, file_id: str) -> str:
        return self._key("files", f"{file_id}.jsonl")

    def output_key(self, batch_id: str) -> str:
        return self._key("outputs", f"{batch_id}.jsonl")

    def ref(self, key: str) -> dict[str, Any]:
        """A BatchJob's input or output field for the object ``key``."""
        if self.api.storage is None:
            return {"operatorVolume": {"path": key}}
        return {"s3": {"url": f"s3://{self.api.bucket}/{key}"}}

    async def add(
        self,
        chunks: AsyncIterator[bytes],
        filename: str,
        purpose: str,
        owner: str,
        max_bytes: int,
    ) -> FileObject:
        """Store an upload; TooLarge (and nothing stored) past ``max_bytes``."""
        file_id = f"file-{secrets.token_hex(12)}"
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for c in chunks:
                size += len(c)
                if size > max_bytes:
                    raise TooLarge(f"file is larger than {max_bytes} bytes")
                yield c

        try:
            await object_store.put(self.bucket, self.content_key(file_id), counted(), FIELD)
        except Exception as e:
            if size > max_bytes:  # however the store's client wrapped it
                raise TooLarge(f"file is larger than {max_bytes} bytes") from e
            raise
        f = FileObject(
            id=file_id, bytes=size, created_at=int(time.time()), filename=filename, purpose=purpose
        )
        meta = {"file": f.model_dump(), "owner": owner}
        await object_store.put(
            self.bucket, self._key("files", f"{file_id}.json"), json.dumps(meta).encode(), FIELD
        )
        return f

    async def get(self, file_id: str, owner: str) -> FileObject:
        try:
            raw = b"".join(
                [
                    c
                    async for c in object_store.read_chunks(
                        self.bucket, self._key("files", f"{file_id}.json"), FIELD
                    )
                ]
            )
        except FileNotFoundError as e:
            raise FileNotThere(file_id) from e
        meta = json.loads(raw)
        if meta.get("owner") != owner:
            raise FileNotThere(file_id)
        return FileObject.model_validate(meta["file"])

    async def list(self, owner: str) -> list[FileObject]:
        keys = await object_store.list_keys(self.bucket, self._key("files"), FIELD)
        out = []
        for k in keys:
            if k.endswith(".json"):
                try:
                    out.append(await self.get(k.rsplit("/", 1)[-1][: -len(".json")], owner))
                except FileNotThere:
                    continue
        return sorted(out, key=lambda f: -f.created_at)

    async def content(self, file_id: str, owner: str) -> AsyncIterator[bytes]:
        await self.get(file_id, owner)
        return object_store.read_chunks(self.bucket, self.content_key(file_id), FIELD)

    async def delete(self, file_id: str, owner: str) -> None:
        await self.get(file_id, owner)
        keys = [self._key("files", f"{file_id}.json"), self.content_key(file_id)]
        await object_store.delete(self.bucket, keys, FIELD)  # the record first: then invisible

    async def output_lines(self, batch_id: str, errors: bool) -> AsyncIterator[bytes]:
        """The batch's output (successes) or error file (failures), as JSONL lines."""
        chunks = object_store.read_chunks(self.bucket, self.output_key(batch_id), FIELD)
        async for _, raw in split_lines(chunks):
            if raw.strip() and result_ok(raw.decode()) != errors:
                yield raw + b"\n"


class NoVolume(Exception):
    """The ServingSLO keeps its batch files on the operator's volume, and it has none."""


async def file_store(
    kube: Kube, ns: str, slo: str, api: BatchApi, volume: Callable[[str], Path | None]
) -> FileStore:
    """The store of a ServingSLO's Batch API: its object store, with the keys read from its
    Secret, or (no storage) its folder of the operator's volume, ``volume(ns)``."""
    if api.storage is None:
        root = volume(ns)
        if root is None:
            raise NoVolume(
                "spec.batchApi.storage: unset, and this operator has no Batch API volume "
                "(hygen-operator run --batch-api-dir; the chart's operator.batchApiVolume)"
            )
        return FileStore(object_store.open_local(root), api, slo)
    assert api.object_store is not None  # validated: it comes with storage
    secret = api.object_store.credentials_secret
    data = ((await kube.get(SECRET, ns, secret)) or {}).get("data") or {}
    env = {
        var: base64.b64decode(data[key]).decode() for var, key in SECRET_KEYS.items() if key in data
    }
    env.setdefault(ACCESS_KEY_ENV, "")
    env.setdefault(SECRET_KEY_ENV, "")
    return FileStore(object_store.open_bucket(api.object_store, api.bucket, env), api, api.prefix)
