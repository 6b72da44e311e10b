"""The cluster Batch API without an object store: files and outputs on the operator's own
volume (``--batch-api-dir``), through the same calls as S3, with the same guarantees: an
upload is invisible until whole, a file is its owner's only, output parts resume after a
crash and compose into one line per input line, and a missing volume names the field."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hygen_operator import object_store
from hygen_operator.batch_api_files import FileNotThere, FileStore, NoVolume, TooLarge, file_store
from hygen_operator.batch_api_objects import batch_job, new_batch_id
from hygen_operator.batch_io import InputError, MissingInput, check_input, input_chunks, make_sink
from hygen_operator.resources import BatchApi, BatchInput, BatchJobSpec
from hygen_operator.s3_sink import S3Sink
from hygen_pod.contract.api import BatchCreate

API = BatchApi.model_validate({"parallelism": 3})


def store(root: Path) -> FileStore:
    return asyncio.run(file_store(None, "ns", "chat", API, lambda ns: root / ns))  # type: ignore[arg-type]


async def chunks(*parts: bytes):
    for p in parts:
        yield p


def out_line(n: int, ok: bool = True) -> str:
    err = None if ok else {"code": "x", "message": "failed"}
    return json.dumps({"id": f"uid-{n}", "custom_id": f"c{n}", "response": None, "error": err})


def test_batch_api_storage_and_object_store_go_together():
    assert API.storage is None and API.object_store is None
    with pytest.raises(ValidationError, match="objectStore"):
        BatchApi.model_validate({"storage": "s3://bkt/p"})
    with pytest.raises(ValidationError, match="storage"):
        BatchApi.model_validate({"objectStore": {"credentialsSecret": "k"}})


def test_operator_volume_refs_stay_in_the_namespace_and_out_of_dispatcher_jobs():
    base = {"servingSlo": "s", "output": {"operatorVolume": {"path": "chat/outputs/x.jsonl"}}}
    ok = BatchJobSpec.model_validate({**base, "input": {"operatorVolume": {"path": "chat/a"}}})
    assert ok.uses_operator_volume and not ok.in_dispatcher_job
    with pytest.raises(ValidationError, match=r"no '\.\.'"):
        BatchJobSpec.model_validate({**base, "input": {"operatorVolume": {"path": "../b/x"}}})
    with pytest.raises(ValidationError, match="cannot be combined"):
        BatchJobSpec.model_validate({
            **base, "input": {"s3": {"url": "s3://bkt/in.jsonl"}},
            "objectStore": {"credentialsSecret": "k"},
        })  # fmt: skip


def test_a_batch_of_a_volume_api_is_a_batchjob_the_operator_dispatches(tmp_path):
    fs = store(tmp_path)
    bid = new_batch_id()
    req = BatchCreate(input_file_id="file-1", endpoint="/v1/completions")
    j = batch_job(bid, "ns", "chat", "me", req, API, fs.ref(fs.content_key("file-1")),
                  fs.ref(fs.output_key(bid)))  # fmt: skip
    spec = BatchJobSpec.model_validate(j["spec"])
    assert spec.input.operator_volume is not None
    assert spec.input.operator_volume.path == "chat/files/file-1.jsonl"
    assert spec.output.operator_volume is not None and spec.object_store is None
    assert not spec.in_dispatcher_job and spec.parallelism == 3


def test_files_on_the_volume_belong_to_their_owner_and_appear_only_when_whole(tmp_path):
    fs = store(tmp_path)

    async def run() -> None:
        f = await fs.add(chunks(b'{"a": 1}\n', b'{"a": 2}\n'), "in.jsonl", "batch", "me", 1 << 20)
        assert (await fs.get(f.id, "me")).bytes == 18
        assert [x.id for x in await fs.list("me")] == [f.id] and await fs.list("you") == []
        with pytest.raises(FileNotThere):
            await fs.get(f.id, "you")
        body = b"".join([c async for c in await fs.content(f.id, "me")])
        assert body == b'{"a": 1}\n{"a": 2}\n'
        with pytest.raises(TooLarge):
            await fs.add(chunks(b"x" * 600, b"x" * 600), "big.jsonl", "batch", "me", 1000)
        assert [x.id for x in await fs.list("me")] == [f.id], "the refused upload is not there"
        await fs.delete(f.id, "me")
        assert await fs.list("me") == []

    asyncio.run(run())
    assert (tmp_path / "ns" / "chat" / "files").is_dir(), "under <namespace>/<ServingSLO>/"
    assert list((tmp_path / "ns" / "chat" / "files").iterdir()) == []


def test_output_parts_on_the_volume_resume_after_a_crash_and_compose_once(tmp_path):
    bucket = object_store.open_local(tmp_path / "ns")
    key = "chat/outputs/b.jsonl"

    async def run() -> None:
        first = S3Sink(bucket, key, "uid")
        assert await first.written() == {}
        await first.write({1: out_line(1), 2: out_line(2, ok=False)})
        await first.write({3: out_line(3)})
        again = S3Sink(bucket, key, "uid")  # a restarted operator: the parts are the truth
        assert await again.written() == {1: True, 2: False, 3: True}
        await again.write({3: out_line(3), 4: out_line(4)})  # a line written twice
        await again.finish()
        after = S3Sink(bucket, key, "uid")  # crashed before cleanup: the output is the truth
        assert await after.written() == {1: True, 2: False, 3: True, 4: True}
        await after.finish()
        await after.cleanup()

    asyncio.run(run())
    out = (tmp_path / "ns" / key).read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in out) == ["uid-1", "uid-2", "uid-3", "uid-4"]
    left = [p for p in (tmp_path / "ns").rglob("*") if p.is_file()]
    assert left == [tmp_path / "ns" / key], "parts and marker are gone"


def test_without_a_volume_a_volume_job_and_the_api_name_the_field(tmp_path):
    spec = BatchJobSpec.model_validate({
        "servingSlo": "s", "input": {"operatorVolume": {"path": "chat/files/f.jsonl"}},
        "output": {"operatorVolume": {"path": "chat/outputs/o.jsonl"}},
    })  # fmt: skip

    async def run() -> None:
        with pytest.raises(InputError, match=r"spec.input.operatorVolume.path: .*--batch-api-dir"):
            await check_input(spec, None, "ns", None, None)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"spec\.output\.operatorVolume\.path"):
            make_sink(spec, None, "ns", "uid", None, None)  # type: ignore[arg-type]
        # only the output there: the error names the output, not the input
        out_only = spec.model_copy(update={"input": BatchInput(inline=[{"x": 1}])})
        await check_input(out_only, None, "ns", None, None)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"spec\.output\.operatorVolume\.path"):
            make_sink(out_only, None, "ns", "uid", None, None)  # type: ignore[arg-type]
        with pytest.raises(MissingInput, match=r"no file 'chat/files/f\.jsonl'"):
            await check_input(spec, None, "ns", None, tmp_path / "ns")  # type: ignore[arg-type]
        (tmp_path / "ns" / "chat" / "files").mkdir(parents=True)
        (tmp_path / "ns" / "chat" / "files" / "f.jsonl").write_bytes(b'{"x": 1}\n')
        await check_input(spec, None, "ns", None, tmp_path / "ns")  # type: ignore[arg-type]
        got = [c async for c in input_chunks(spec, None, "ns", None, tmp_path / "ns")]  # type: ignore[arg-type]
        assert b"".join(got) == b'{"x": 1}\n'
        with pytest.raises(NoVolume, match=r"spec\.batchApi\.storage: unset"):
            await file_store(None, "ns", "chat", API, lambda ns: None)  # type: ignore[arg-type]

    asyncio.run(run())
