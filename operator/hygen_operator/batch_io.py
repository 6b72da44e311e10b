"""Where a BatchJob's lines come from and where its results go.

Input: inline lines, a ConfigMap key, a file on a volume, an object on S3-compatible
storage, or a file on the operator's Batch API volume, always read as a stream of chunks
(a volume file or an object can be far larger than memory). Output: ConfigMaps with one
key per line (``line-000017``), an OpenAI batch output JSONL file on a volume, or one on
the object store or the operator's volume (`s3_sink`, in parts on either). Every sink is
keyed by input line number and reports which lines it already holds, which is what lets a
restarted dispatcher skip finished lines and never record one twice.

The API server refuses a ConfigMap whose data exceeds 1 MiB, so ConfigMap output is split
into parts: ``NAME``, ``NAME-2``, ``NAME-3``, ... each filled up to `PART_BYTES`, and a
result too large for any ConfigMap is recorded as a ``result_too_large`` error naming
the way out (a volume output) instead of being lost.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from hygen_operator import object_store
from hygen_operator.kube import CONFIGMAP, Kube
from hygen_operator.object_store import StoreConfigError
from hygen_operator.resources import BatchJobSpec, VolumeRef

CHUNK_BYTES = 1 << 20  # what a volume file is read in

KEY_PREFIX = "line-"
CONFIGMAP_LIMIT = 1024 * 1024  # the API server's limit on a ConfigMap's data
PART_BYTES = 900 * 1024  # what a part is filled to: headroom for keys and metadata


class MissingInput(Exception):
    """The input is not there yet (a ConfigMap or its key): wait for it, do not fail."""


class InputError(Exception):
    """The job's input or output cannot be used at all (as opposed to one bad line)."""


def line_key(line: int) -> str:
    return f"{KEY_PREFIX}{line:06d}"


def volume_file(root: Path | None, ref: VolumeRef, field: str) -> Path:
    """The file of ``ref`` where this process has claim ``ref.claim_name`` mounted."""
    if root is None:
        raise InputError(f"{field}: volume files are read by the dispatcher Job, not the operator")
    return root / ref.claim_name / ref.path


def operator_bucket(own: Path | None, field: str) -> object_store.Bucket:
    """The namespace's folder of the operator's Batch API volume, as a bucket."""
    if own is None:
        raise InputError(
            f"{field}: this operator has no Batch API volume (hygen-operator run "
            "--batch-api-dir; the chart's operator.batchApiVolume)"
        )
    return object_store.open_local(own)


async def input_chunks(
    spec: BatchJobSpec, kube: Kube, ns: str, root: Path | None, own: Path | None = None
) -> AsyncIterator[bytes]:
    """The job's input JSONL as a stream of chunks (a ConfigMap or inline input is small by
    the API server's limits and comes whole; a volume file and an object are streamed)."""
    src = spec.input
    if src.inline is not None:
        yield "\n".join(json.dumps(x) for x in src.inline).encode()
    elif src.volume is not None:
        path = volume_file(root, src.volume, "spec.input.volume")
        try:
            f = path.open("rb")
        except OSError as e:
            raise InputError(f"spec.input.volume.path: cannot read {src.volume.path!r}: {e}") from e
        with f:
            while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                yield chunk
    elif src.s3 is not None:
        try:
            bucket = object_store.bucket_of(spec.object_store, src.s3)
            async for chunk in object_store.read_chunks(bucket, src.s3.key, "spec.input.s3.url"):
                yield chunk
        except StoreConfigError as e:
            raise InputError(str(e)) from e
        except FileNotFoundError as e:
            raise MissingInput(f"spec.input.s3.url: no object {src.s3.url}") from e
    elif src.operator_volume is not None:
        field = "spec.input.operatorVolume.path"
        bucket = operator_bucket(own, field)
        try:
            async for chunk in object_store.read_chunks(bucket, src.operator_volume.path, field):
                yield chunk
        except FileNotFoundError as e:
            raise MissingInput(f"{field}: no file {src.operator_volume.path!r}") from e
    else:
        yield await _config_map_input(spec, kube, ns)


async def _config_map_input(spec: BatchJobSpec, kube: Kube, ns: str) -> bytes:
    ref = spec.input.config_map
    assert ref is not None
    cm = await kube.get(CONFIGMAP, ns, ref.name)
    if cm is None:
        raise MissingInput(f"spec.input.configMap.name: ConfigMap {ref.name!r} not found in {ns}")
    text = (cm.get("data") or {}).get(ref.key)
    if text is None:
        raise MissingInput(
            f"spec.input.configMap.key: ConfigMap {ref.name!r} has no key {ref.key!r}"
        )
    return text.encode()


async def check_input(
    spec: BatchJobSpec, kube: Kube, ns: str, root: Path | None, own: Path | None = None
) -> None:
    """Raise MissingInput while the input is not there yet, InputError if it never can be.
    ``own`` is this namespace's folder of the operator's Batch API volume, if it has one."""
    if spec.input.config_map is not None:
        await _config_map_input(spec, kube, ns)
    elif spec.input.operator_volume is not None:  # an output there is checked by make_sink
        field = "spec.input.operatorVolume.path"
        ref = spec.input.operator_volume
        if not await object_store.exists(operator_bucket(own, field), ref.path, field):
            raise MissingInput(f"{field}: no file {ref.path!r}")
    elif spec.input.s3 is not None and root is not None:  # the dispatcher Job holds the keys
        ref = spec.input.s3
        try:
            bucket = object_store.bucket_of(spec.object_store, ref)
            found = await object_store.exists(bucket, ref.key, "spec.input.s3.url")
        except StoreConfigError as e:
            raise InputError(str(e)) from e
        if not found:
            raise MissingInput(f"spec.input.s3.url: no object {ref.url}")


def result_ok(line: str) -> bool:
    """Whether a stored output line is a success (no error, no error status)."""
    out = json.loads(line)
    code = (out.get("response") or {}).get("status_code")
    return out.get("error") is None and (code is None or code < 400)


class ResultSink(Protocol):
    async def written(self) -> dict[int, bool]:
        """Input lines whose output is already stored, and whether each is a success."""
        ...

    async def write(self, results: dict[int, str]) -> None:
        """Store these output lines durably (writing one again must be harmless)."""
        ...

    async def finish(self) -> None:
        """Every result is written: publish the output (a no-op where writes are the output)."""
        ...

    async def cleanup(self) -> None:
        """The job's final status is recorded: drop what only resuming needed."""
        ...


def part_name(name: str, index: int) -> str:
    """The ConfigMap holding part ``index`` (0-based) of an output named ``name``."""
    return name if index == 0 else f"{name}-{index + 1}"


def _entry_bytes(line: int, value: str) -> int:
    return len(line_key(line).encode()) + len(value.encode())


def too_large(line: int, value: str) -> str:
    """The error record that replaces a result no ConfigMap can hold."""
    out = json.loads(value)
    out["response"] = None
    out["error"] = {
        "code": "result_too_large",
        "message": f"line {line}: the result is {len(value.encode())} bytes; a ConfigMap "
        f"holds at most {CONFIGMAP_LIMIT}: use output.volume for results this large",
    }
    return json.dumps(out)


class ConfigMapSink:
    """Results in ConfigMaps ``NAME``, ``NAME-2``, ...: a part is filled to `PART_BYTES`,
    then the next is created. ``parts`` lists them (for the job's status)."""

    def __init__(self, kube: Kube, ns: str, name: str, part_bytes: int = PART_BYTES) -> None:
        self.kube, self.ns, self.name, self.part_bytes = kube, ns, name, part_bytes
        self.parts: list[str] = []
        self._sizes: list[int] = []

    async def written(self) -> dict[int, bool]:
        out: dict[int, bool] = {}
        self.parts, self._sizes = [], []
        while True:
            name = part_name(self.name, len(self.parts))
            if not self.parts:  # the first part always exists: create it empty
                cm, _ = await self.kube.ensure(
                    CONFIGMAP, self.ns, {"metadata": {"name": name}, "data": {}}
                )
            else:
                cm = await self.kube.get(CONFIGMAP, self.ns, name)
                if cm is None:
                    return out
            data = cm.get("data") or {}
            lines = {
                int(k[len(KEY_PREFIX) :]): result_ok(v)
                for k, v in data.items()
                if k.startswith(KEY_PREFIX)
            }
            out.update(lines)
            self.parts.append(name)
            self._sizes.append(sum(len(k.encode()) + len(v.encode()) for k, v in data.items()))

    async def write(self, results: dict[int, str]) -> None:
        if not self.parts:
            await self.written()
        batch: dict[str, str] = {}
        for n, v in sorted(results.items()):
            if _entry_bytes(n, v) > self.part_bytes:
                v = too_large(n, v)
            size = _entry_bytes(n, v)
            if self._sizes[-1] + size > self.part_bytes:  # this part is full: the next one
                await self._flush(batch)
                batch = {}
                name = part_name(self.name, len(self.parts))
                await self.kube.ensure(CONFIGMAP, self.ns, {"metadata": {"name": name}, "data": {}})
                self.parts.append(name)
                self._sizes.append(0)
            batch[line_key(n)] = v
            self._sizes[-1] += size
        await self._flush(batch)

    async def _flush(self, data: dict[str, str]) -> None:
        if data:
            await self.kube.patch(CONFIGMAP, self.ns, self.parts[-1], {"data": data})

    async def finish(self) -> None:
        pass

    async def cleanup(self) -> None:
        pass


class FileSink:
    """An append-only JSONL file, fsynced per write; a torn last line (crash) is dropped."""

    def __init__(self, path: Path, job_uid: str) -> None:
        self.path, self.prefix = path, f"{job_uid}-"

    async def written(self) -> dict[int, bool]:
        try:
            f = self.path.open("r+b")
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return {}
        out: dict[int, bool] = {}
        with f:  # line by line: the file may be far larger than memory
            good = 0
            for line in f:
                if not line.endswith(b"\n"):  # a write cut short: never acknowledged
                    f.truncate(good)
                    break
                good += len(line)
                n = line_of(line, self.prefix)
                if n is not None:
                    out.setdefault(n, result_ok(line.decode()))
        return out

    async def write(self, results: dict[int, str]) -> None:
        with self.path.open("ab") as f:
            f.write("".join(v + "\n" for _, v in sorted(results.items())).encode())
            f.flush()
            os.fsync(f.fileno())

    async def finish(self) -> None:
        pass

    async def cleanup(self) -> None:
        pass


def line_of(line: bytes | str, prefix: str) -> int | None:
    """The input line number of a stored output line of this job (its id is PREFIX<n>)."""
    rid = json.loads(line).get("id", "")
    tail = rid[len(prefix) :] if isinstance(rid, str) and rid.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def make_sink(
    spec: BatchJobSpec,
    kube: Kube,
    ns: str,
    job_uid: str,
    root: Path | None,
    own: Path | None = None,
) -> ResultSink:
    out = spec.output
    if out.volume is not None:
        return FileSink(volume_file(root, out.volume, "spec.output.volume"), job_uid)
    if out.s3 is not None:
        from hygen_operator.s3_sink import S3Sink

        return S3Sink(object_store.bucket_of(spec.object_store, out.s3), out.s3.key, job_uid)
    if out.operator_volume is not None:
        from hygen_operator.s3_sink import S3Sink

        field = "spec.output.operatorVolume.path"
        return S3Sink(operator_bucket(own, field), out.operator_volume.path, job_uid, field)
    assert out.config_map is not None
    return ConfigMapSink(kube, ns, out.config_map.name)
