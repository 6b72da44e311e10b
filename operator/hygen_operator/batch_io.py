"""Where a BatchJob's lines come from and where its results go.

Input: inline lines, a ConfigMap key, or a file on a volume. Output: a ConfigMap with one
key per line (``line-000017``), or an OpenAI batch output JSONL file on a volume. Both sinks
are keyed by input line number and report what they already hold, which is what lets a
restarted dispatcher skip finished lines and never record one twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from hygen_operator.kube import CONFIGMAP, Kube
from hygen_operator.resources import BatchJobSpec, VolumeRef

KEY_PREFIX = "line-"


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
        raise InputError(f"spec.input.configMap.name: ConfigMap {src.config_map.name!r} not found")
    text = (cm.get("data") or {}).get(src.config_map.key)
    if text is None:
        raise InputError(
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


class ConfigMapSink:
    def __init__(self, kube: Kube, ns: str, name: str) -> None:
        self.kube, self.ns, self.name = kube, ns, name

    async def written(self) -> dict[int, str]:
        body = {"metadata": {"name": self.name}, "data": {}}
        cm, _ = await self.kube.ensure(CONFIGMAP, self.ns, body)
        data = cm.get("data") or {}
        return {int(k[len(KEY_PREFIX) :]): v for k, v in data.items() if k.startswith(KEY_PREFIX)}

    async def write(self, results: dict[int, str]) -> None:
        data = {line_key(n): v for n, v in results.items()}
        await self.kube.patch(CONFIGMAP, self.ns, self.name, {"data": data})


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
