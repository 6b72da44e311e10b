"""Reading a batch input as a stream: lines across chunk edges, over-long lines cut while
streaming, the same verdicts as a whole read; the dispatcher's bounded window; s3 specs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from hygen_operator.dispatch import Dispatcher, Progress
from hygen_operator.pod_client import PodAddress
from hygen_operator.resources import BatchJobSpec
from hygen_pod.contract.batch_input import (
    MAX_LINE_BYTES,
    BadLine,
    BatchParser,
    parse_batch_file,
    split_lines,
)
from tests.unit.test_dispatch import MemorySink, Pods, lines, spec

EP = "/v1/completions"


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def split(data: bytes, size: int) -> list[tuple[int, bytes]]:
    async def run() -> list[tuple[int, bytes]]:
        return [x async for x in split_lines(_chunks(data, size))]

    return asyncio.run(run())


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1 << 20])
def test_lines_split_across_any_chunk_edges_match_a_whole_read(size: int):
    data = lines(20) + b"\n\n" + b'{"bad json\n' + lines(2)  # a blank line, a bad one, repeats
    got = split(data, size)
    assert [raw for _, raw in got] == data.split(b"\n")
    parser = BatchParser(EP)
    streamed = [x for no, raw in got if (x := parser.parse(no, raw)) is not None]
    assert streamed == parse_batch_file(data, EP)
    assert [x.code for x in streamed if isinstance(x, BadLine)] == ["invalid_json"] + [
        "duplicate_custom_id"
    ] * 2


def test_an_over_long_line_is_cut_while_streaming_and_refused_on_its_own():
    long = b'{"custom_id": "x", "pad": "' + b"y" * (3 * MAX_LINE_BYTES) + b'"}'
    data = lines(1) + b"\n" + long + b"\n" + lines(1).replace(b"c0", b"c1")
    got = split(data, 65536)
    assert [len(raw) for _, raw in got][1] == MAX_LINE_BYTES + 1  # never more held
    parser = BatchParser(EP)
    items = [parser.parse(no, raw) for no, raw in got]
    assert isinstance(items[1], BadLine) and items[1].code == "line_too_long"
    assert [getattr(x, "custom_id", None) for x in items] == ["c0", None, "c1"]


def test_the_dispatcher_holds_a_bounded_window_of_a_large_input():
    pods, sink = Pods(), MemorySink()
    seen = {"max": 0}
    a = PodAddress("a", "10.0.0.1", 8000)

    async def read() -> AsyncIterator[bytes]:
        yield lines(2000)

    async def ready() -> list[PodAddress]:  # asked every poll (poll_s = 0)
        seen["max"] = max(seen["max"], len(d._pending) + len(d._inflight))
        return [a]

    async def report(p: Progress) -> None:
        pass

    d = Dispatcher(pods, "uid", spec(parallelism=8), read, sink, ready, report, poll_s=0.0)  # type: ignore[arg-type]
    outcome, p = asyncio.run(d.run(lambda: None))
    assert outcome == "Succeeded" and (p.total, p.completed) == (2000, 2000)
    assert len(sink.lines) == 2000
    assert 0 < seen["max"] <= 2 * 8, seen  # two pods' worth of a 2,000-line input


def s3_spec(**kw) -> dict:
    return {"servingSlo": "s", "input": {"s3": {"url": "s3://my-bucket/in/a.jsonl"}},
            "output": {"s3": {"url": "s3://my-bucket/out/a.jsonl"}}, **kw}  # fmt: skip


def test_s3_specs_need_a_store_and_a_well_formed_url():
    ok = BatchJobSpec.model_validate(s3_spec(objectStore={"credentialsSecret": "k"}))
    assert ok.input.s3 is not None and (ok.input.s3.bucket, ok.input.s3.key) == (
        "my-bucket",
        "in/a.jsonl",
    )
    assert ok.in_dispatcher_job and not ok.uses_volume
    with pytest.raises(ValidationError, match="objectStore: required"):
        BatchJobSpec.model_validate(s3_spec())
    bad = s3_spec(objectStore={"credentialsSecret": "k"})
    bad["input"] = {"s3": {"url": "http://my-bucket/a"}}
    with pytest.raises(ValidationError, match=r"input\.s3\.url"):
        BatchJobSpec.model_validate(bad)
    with pytest.raises(ValidationError, match=r"objectStore\.credentialsSecret"):
        BatchJobSpec.model_validate(s3_spec(objectStore={"endpoint": "http://minio:9000"}))
    two = s3_spec(objectStore={"credentialsSecret": "k"})
    two["input"]["inline"] = [{}]
    with pytest.raises(ValidationError, match="exactly one of input"):
        BatchJobSpec.model_validate(two)
    assert json.loads(ok.model_dump_json(by_alias=True))["objectStore"]["region"] == "us-east-1"
