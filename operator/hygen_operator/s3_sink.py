"""A BatchJob's output JSONL on S3-compatible storage (or the operator's Batch API volume,
through the same calls), written durably in parts.

S3 has no append, so each flush of results is one immutable part object under
``KEY.hygen/<job uid>/part-NNNNNNNN.jsonl``: a crash loses nothing acknowledged (a result is
acknowledged on its pod only after its part is stored) and a restart lists the parts to
learn which lines are done. When every line has a result, `finish` streams the parts into
the output object ``KEY`` (a multipart upload, one copy of each line), records that with a
``_composed`` marker, and deletes the parts; after a crash at any point the marker says
whether the output is complete (then it is read back for the done lines) or the parts still
are the truth. `cleanup` drops the marker once the job's final status is recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from hygen_operator import object_store
from hygen_operator.batch_io import line_of, result_ok
from hygen_operator.object_store import Bucket
from hygen_pod.contract.batch_input import split_lines

FIELD = "spec.output.s3.url"
UPLOAD_CHUNK = 8 << 20  # bytes handed to the multipart upload at a time


class S3Sink:
    """Output on the object store: parts while running, one object when finished."""

    def __init__(self, bucket: Bucket, key: str, job_uid: str, field: str = FIELD) -> None:
        self.bucket, self.key, self.field = bucket, key, field
        self.prefix = f"{job_uid}-"  # output line ids: <job uid>-<line>
        self.parts_dir = f"{key}.hygen/{job_uid}"
        self.marker = f"{self.parts_dir}/_composed"
        self._next = 0
        self._composed = False

    def _part(self, seq: int) -> str:
        return f"{self.parts_dir}/part-{seq:08d}.jsonl"

    async def _parts(self) -> list[str]:
        keys = await object_store.list_keys(self.bucket, self.parts_dir, self.field)
        return [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")]

    async def _lines(self, key: str) -> AsyncIterator[bytes]:
        chunks = object_store.read_chunks(self.bucket, key, self.field)
        async for _, raw in split_lines(chunks):
            if raw.strip():
                yield raw

    async def written(self) -> dict[int, bool]:
        keys = await object_store.list_keys(self.bucket, self.parts_dir, self.field)
        self._composed = self.marker in keys
        sources = [self.key] if self._composed else [k for k in keys if "/part-" in k]
        out: dict[int, bool] = {}
        for key in sources:
            async for raw in self._lines(key):
                n = line_of(raw, self.prefix)
                if n is not None:
                    out.setdefault(n, result_ok(raw.decode()))
        parts = [k for k in keys if "/part-" in k]
        self._next = 1 + max((int(k[-14:-6]) for k in parts), default=-1)
        return out

    async def write(self, results: dict[int, str]) -> None:
        if not results:
            return
        if self._composed:
            raise RuntimeError(f"{self.key}: output already composed; no more results")
        data = "".join(v + "\n" for _, v in sorted(results.items())).encode()
        await object_store.put(self.bucket, self._part(self._next), data, self.field)
        self._next += 1

    async def finish(self) -> None:
        if not self._composed:
            await object_store.put(self.bucket, self.key, self._compose(), self.field)
            await object_store.put(self.bucket, self.marker, b"", self.field)
            self._composed = True
        await object_store.delete(self.bucket, await self._parts(), self.field)

    async def cleanup(self) -> None:
        await object_store.delete(self.bucket, [self.marker], self.field)

    async def _compose(self) -> AsyncIterator[bytes]:
        """Every part's lines, one copy per input line, in upload-sized chunks."""
        seen: set[int] = set()
        buf = bytearray()
        for key in await self._parts():
            async for raw in self._lines(key):
                n = line_of(raw, self.prefix)
                if n is None or n in seen:
                    continue
                seen.add(n)
                buf += raw + b"\n"
                if len(buf) >= UPLOAD_CHUNK:
                    yield bytes(buf)
                    buf.clear()
        if buf or not seen:
            yield bytes(buf)
