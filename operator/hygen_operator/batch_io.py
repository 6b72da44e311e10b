"""Where a BatchJob's lines come from and where its results go.

Input: inline lines, a ConfigMap key, or a file on a volume. Output: ConfigMaps with one
key per line (``line-000017``), or an OpenAI batch output JSONL file on a volume. Both sinks
are keyed by input line number and report what they already hold, which is what lets a
restarted dispatcher skip finished lines and never record one twice.

The API server refuses a ConfigMap whose data exceeds 1 MiB, so ConfigMap output is split
into parts: ``NAME``, ``NAME-2``, ``NAME-3``, ... each filled up to `PART_BYTES`, and a
result too large for any ConfigMap is recorded as a ``result_too_large`` error naming
the way out (a volume output) instead of being lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from hygen_operator.kube import CONFIGMAP, Kube
from hygen_operator.resources import BatchJobSpec, VolumeRef

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


async def read_input(spec: BatchJobSpec, kube: Kube, ns: str, root: Path | None) -> bytes:
    src = spec.input
    if src.inline is not None:
        return "\n".join(json.dumps(x) for x in src.inline).encode()
    if src.volume is not None:
        path = volume_file(root, src.volume, "spec.input.volume")
        try:
            return path.read_bytes()
        except OSError as e:
            raise InputError(f"spec.input.volume.path: cannot read {src.volume.path!r}: {e}") from e
    assert src.config_map is not None
    cm = await kube.get(CONFIGMAP, ns, src.config_map.name)
    if cm is None:
        raise MissingInput(
            f"spec.input.configMap.name: ConfigMap {src.config_map.name!r} not found in {ns}"
        )
    text = (cm.get("data") or {}).get(src.config_map.key)
    if text is None:
        raise MissingInput(
            f"spec.input.configMap.key: ConfigMap {src.config_map.name!r} has no key "
            f"{src.config_map.key!r}"
        )
    return text.encode()


class ResultSink(Protocol):
    async def written(self) -> dict[int, str]:
        """Output lines already stored, by input line number."""
        ...

    async def write(self, results: dict[int, str]) -> None:
        """Store these output lines durably (writing one again must be harmless)."""
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

    async def written(self) -> dict[int, str]:
        out: dict[int, str] = {}
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
                int(k[len(KEY_PREFIX) :]): v for k, v in data.items() if k.startswith(KEY_PREFIX)
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


class FileSink:
    """An append-only JSONL file, fsynced per write; a torn last line (crash) is dropped."""

    def __init__(self, path: Path, job_uid: str) -> None:
        self.path, self.prefix = path, f"{job_uid}-"

    async def written(self) -> dict[int, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return {}
        keep = raw[: raw.rfind(b"\n") + 1]
        if len(keep) != len(raw):  # a write cut short: the line was never acknowledged
            with self.path.open("r+b") as f:
                f.truncate(len(keep))
        out: dict[int, str] = {}
        for line in keep.decode().splitlines():
            rid = json.loads(line).get("id", "")
            if rid.startswith(self.prefix):
                out.setdefault(int(rid[len(self.prefix) :]), line)
        return out

    async def write(self, results: dict[int, str]) -> None:
        with self.path.open("ab") as f:
            f.write("".join(v + "\n" for _, v in sorted(results.items())).encode())
            f.flush()
            os.fsync(f.fileno())


def make_sink(
    spec: BatchJobSpec, kube: Kube, ns: str, job_uid: str, root: Path | None
) -> ResultSink:
    out = spec.output
    if out.volume is not None:
        return FileSink(volume_file(root, out.volume, "spec.output.volume"), job_uid)
    assert out.config_map is not None
    return ConfigMapSink(kube, ns, out.config_map.name)
