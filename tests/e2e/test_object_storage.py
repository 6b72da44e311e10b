"""BatchJob input and output on a real S3 API (moto's server on 127.0.0.1): the sink's parts
and their composition, resuming at every crash point, streaming in bounded memory, and
errors that name the field to fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from hygen_operator import object_store
from hygen_operator.batch_io import InputError, MissingInput, check_input, result_ok
from hygen_operator.object_store import StoreConfigError
from hygen_operator.resources import BatchJobSpec
from hygen_operator.s3_sink import S3Sink
from tests.helpers.kube.cluster import (
    Cluster,
    batch_job,
    batch_lines,
    ends_through_dispatcher_kill9,
    finished,
    ready,
    secret,
    serving_slo,
)
from tests.helpers.s3_server import S3Server


def spec(s3: S3Server, bucket: str, key: str = "in.jsonl") -> BatchJobSpec:
    return BatchJobSpec.model_validate({
        "servingSlo": "s", "endpoint": "/v1/completions",
        "input": {"s3": {"url": f"s3://{bucket}/{key}"}},
        "output": {"s3": {"url": f"s3://{bucket}/out/result.jsonl"}},
        "objectStore": {"endpoint": s3.endpoint, "credentialsSecret": "keys"},
    })  # fmt: skip


def out_line(n: int, ok: bool = True) -> str:
    err = None if ok else {"code": "x", "message": "failed"}
    return json.dumps({"id": f"uid-{n}", "custom_id": f"c{n}", "response": None, "error": err})


def sink(s3: S3Server, bucket: str, monkeypatch) -> S3Sink:
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    cfg = spec(s3, bucket).object_store
    assert cfg is not None
    return S3Sink(object_store.open_bucket(cfg, bucket), "out/result.jsonl", "uid")


def keys(s3: S3Server, bucket: str) -> list[str]:
    return s3.keys(bucket)


def test_results_go_in_parts_then_one_output_object_with_each_line_once(s3, monkeypatch):
    b = s3.bucket()

    async def run() -> None:
        first = sink(s3, b, monkeypatch)
        assert await first.written() == {}
        await first.write({1: out_line(1), 2: out_line(2, ok=False)})
        await first.write({3: out_line(3)})
        # a restart learns what is done from the parts, and keeps numbering them
        again = sink(s3, b, monkeypatch)
        assert await again.written() == {1: True, 2: False, 3: True}
        await again.write({4: out_line(4)})
        assert len([k for k in keys(s3, b) if "/part-" in k]) == 3
        await again.finish()
        await again.cleanup()

    asyncio.run(run())
    assert keys(s3, b) == ["out/result.jsonl"], "parts and marker are gone"
    body = s3.get(b, "out/result.jsonl").decode()
    ids = sorted(json.loads(x)["id"] for x in body.splitlines())
    assert ids == ["uid-1", "uid-2", "uid-3", "uid-4"]


def test_a_crash_while_publishing_the_output_resumes_without_rerunning_a_line(s3, monkeypatch):
    b = s3.bucket()
    real_delete = object_store.delete

    async def crash(*a, **k):
        raise OSError("killed while deleting the parts")

    async def run() -> None:
        s = sink(s3, b, monkeypatch)
        await s.written()
        await s.write({n: out_line(n) for n in range(1, 6)})
        monkeypatch.setattr(object_store, "delete", crash)
        with pytest.raises(OSError):
            await s.finish()  # the output object and the marker are written, parts remain
        monkeypatch.setattr(object_store, "delete", real_delete)
        after = sink(s3, b, monkeypatch)
        # the marker says the output is complete: done lines come from it, none reruns
        assert await after.written() == dict.fromkeys(range(1, 6), True)
        await after.finish()
        await after.cleanup()

    asyncio.run(run())
    assert keys(s3, b) == ["out/result.jsonl"]


def test_store_errors_name_the_field_to_fix(s3, monkeypatch):
    b = s3.bucket()
    s3.put(b, "in.jsonl", b"{}\n")
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)

    async def check(sp: BatchJobSpec) -> None:
        await check_input(sp, None, "ns", root=object())  # type: ignore[arg-type]

    asyncio.run(check(spec(s3, b)))  # there: no error
    with pytest.raises(MissingInput, match=r"spec.input.s3.url: no object"):
        asyncio.run(check(spec(s3, b, key="later.jsonl")))  # not yet: the job waits
    with pytest.raises(InputError, match=r"spec.input.s3.url: bucket 'nowhere' does not exist"):
        asyncio.run(check(spec(s3, "nowhere")))
    monkeypatch.setenv("HYGEN_S3_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(
        InputError, match=r"spec.objectStore.credentialsSecret: .* refused the credentials"
    ):
        asyncio.run(check(spec(s3, b)))
    monkeypatch.delenv("HYGEN_S3_SECRET_ACCESS_KEY")
    with pytest.raises(InputError, match=r"credentialsSecret: Secret 'keys' .* secretAccessKey"):
        asyncio.run(check(spec(s3, b)))
    monkeypatch.setenv("HYGEN_S3_SECRET_ACCESS_KEY", s3.secret_key)
    out = sink(s3, "nowhere", monkeypatch)
    with pytest.raises(StoreConfigError, match=r"spec.output.s3.url: bucket 'nowhere'"):
        asyncio.run(out.written())


BUDGET_MB = 96  # what the reader may add to its resident memory


def test_an_input_larger_than_the_reader_may_buffer_streams_through(s3, tmp_path):
    """A 256 MiB input (64 Ki lines of 4 KiB) read and parsed in a child whose resident
    memory may grow by BUDGET_MB only: reading it whole would need 256."""
    b = s3.bucket()
    big = tmp_path / "in.jsonl"
    pad = "x" * 4000
    with big.open("w") as f:
        for i in range(65536):
            body = {"prompt": pad, "max_tokens": 1}
            line = {"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions", "body": body}
            f.write(json.dumps(line) + "\n")
    assert big.stat().st_size > 256 << 20
    s3.put(b, "in.jsonl", big)
    big.unlink()
    child = textwrap.dedent(f"""
        import asyncio, json
        from pathlib import Path
        from hygen_operator.batch_io import input_chunks
        from hygen_operator.resources import BatchJobSpec
        from hygen_pod.contract.batch_input import BatchLine, BatchParser, split_lines
        sp = BatchJobSpec.model_validate({spec(s3, b).model_dump(by_alias=True)!r})
        def hwm_mb():  # this process's own peak (ru_maxrss would carry the parent's over fork)
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        async def main():
            parser, n, size = BatchParser(sp.endpoint), 0, 0
            base = hwm_mb()
            async for no, raw in split_lines(input_chunks(sp, None, "ns", None)):
                n += isinstance(parser.parse(no, raw), BatchLine)
                size += len(raw) + 1
            peak = hwm_mb()
            print(json.dumps({{"lines": n, "bytes": size, "grew_mb": peak - base,
                              "peak_mb": peak}}), flush=True)
        asyncio.run(main())
    """)
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, **s3.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(got)
    assert got["lines"] == 65536 and got["bytes"] > 256 << 20
    assert got["grew_mb"] < BUDGET_MB, got


EXITS = 30  # obstore's *_async calls aborted about 30% of these exits (SIGABRT, exit -6)


def test_a_process_that_used_the_store_exits_cleanly(s3):
    """A dispatcher ends its process after its last store call; that exit must be 0, or its
    Job is counted failed. A tokio thread still completing an asyncio future when the
    interpreter finalizes aborts it, so each of EXITS children reads, writes (from an async
    iterator), lists and deletes, then exits at once."""
    b = s3.bucket()
    s3.put(b, "in.jsonl", b'{"a": 1}\n' * 1000)
    child = textwrap.dedent(f"""
        import asyncio
        from hygen_operator import object_store
        from hygen_operator.resources import BatchJobSpec
        sp = BatchJobSpec.model_validate({spec(s3, b).model_dump(by_alias=True)!r})
        async def main():
            bucket = object_store.bucket_of(sp.object_store, sp.input.s3)
            async def body():
                for _ in range(3):
                    yield b"x" * 100
            for i in range(5):
                n = sum([len(c) async for c in object_store.read_chunks(bucket, "in.jsonl", "f")])
                assert n == 9000, n
                assert await object_store.exists(bucket, "in.jsonl", "f")
                await object_store.put(bucket, f"out/{{i}}", body(), "f")
                assert f"out/{{i}}" in await object_store.list_keys(bucket, "out", "f")
                await object_store.delete(bucket, [f"out/{{i}}"], "f")
        asyncio.run(main())
    """)
    env = {**__import__("os").environ, **s3.env()}
    codes = [
        subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                       env=env, timeout=120)
        for _ in range(EXITS)
    ]  # fmt: skip
    bad = [(d.returncode, d.stderr[-500:]) for d in codes if d.returncode != 0]
    assert not bad, f"{len(bad)} of {EXITS} exits failed: {bad[0]}"


def test_result_ok_reads_errors_and_error_statuses():
    assert result_ok(out_line(1)) and not result_ok(out_line(2, ok=False))
    bad = {"id": "u-1", "response": {"status_code": 400, "body": {}}, "error": None}
    assert not result_ok(json.dumps(bad))


# ------------------------------------------------------------- through the cluster
def credentials(c: Cluster, s3: S3Server, name: str = "s3-keys", key: str | None = None):
    secret(c.api, name, {"accessKeyId": s3.access_key, "secretAccessKey": key or s3.secret_key})


def s3_job(s3: S3Server, name: str, bucket: str, **spec) -> dict:
    job = batch_job(name, "chat", [], parallelism=4, **spec)
    job["spec"]["input"] = {"s3": {"url": f"s3://{bucket}/batches/in.jsonl"}}
    job["spec"]["output"] = {"s3": {"url": f"s3://{bucket}/results/{name}.jsonl"}}
    job["spec"]["objectStore"] = {"endpoint": s3.endpoint, "credentialsSecret": "s3-keys"}
    return job


def test_s3_batchjob_ends_exactly_once_through_a_kill9_of_its_dispatcher(cluster: Cluster, s3):
    c, n = cluster, 120
    b = s3.bucket()
    body = "".join(json.dumps(x) + "\n" for x in batch_lines(n))
    s3.put(b, "batches/in.jsonl", body.encode())
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"  # the batch outlasts the kill's wait
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    c.api.create(s3_job(s3, "obj", b), "batchjobs")
    st = c.wait(lambda: c.status("batchjobs", "obj").get("reason") == "SecretNotFound"
                and c.status("batchjobs", "obj"), 30, "waits for its Secret")  # fmt: skip
    assert "spec.objectStore.credentialsSecret" in st["message"]
    credentials(c, s3)
    ends_through_dispatcher_kill9(c, "obj", n, 180)
    assert s3.keys(b) == ["batches/in.jsonl", "results/obj.jsonl"]
    out = s3.get(b, "results/obj.jsonl").decode()
    got = [json.loads(x) for x in out.splitlines()]
    assert sorted(r["custom_id"] for r in got) == sorted(f"req-{i}" for i in range(n))
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in got)


def test_s3_batchjob_with_wrong_credentials_or_no_bucket_fails_naming_the_field(
    cluster: Cluster, s3
):
    c = cluster
    b = s3.bucket()
    s3.put(b, "batches/in.jsonl", b"{}\n")
    c.api.create(serving_slo(), "servingslos")
    credentials(c, s3, key="not-the-secret")
    c.api.create(s3_job(s3, "badkeys", b), "batchjobs")
    st = finished(c, "badkeys", 60)
    assert st["phase"] == "Failed", st
    assert st["message"].startswith("spec.objectStore.credentialsSecret:"), st
    assert "refused the credentials of Secret 's3-keys'" in st["message"]
    credentials(c, s3, name="good-keys")
    job = s3_job(s3, "nobucket", b)
    job["spec"]["objectStore"]["credentialsSecret"] = "good-keys"
    job["spec"]["output"] = {"s3": {"url": "s3://no-such-bucket/out.jsonl"}}
    c.api.create(job, "batchjobs")
    st = finished(c, "nobucket", 60)
    assert st["phase"] == "Failed", st
    assert st["message"].startswith("spec.output.s3.url: bucket 'no-such-bucket' does not exist")


def test_an_upload_past_the_limit_is_refused_and_leaves_no_file(s3, monkeypatch):
    from hygen_operator.batch_api_files import FileStore, TooLarge
    from hygen_operator.resources import BatchApi

    b = s3.bucket()
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    api = BatchApi.model_validate({"storage": f"s3://{b}/api",
                                   "objectStore": {"endpoint": s3.endpoint,
                                                   "credentialsSecret": "keys"}})  # fmt: skip
    assert api.object_store is not None
    fs = FileStore(object_store.open_bucket(api.object_store, b), api, api.prefix)

    async def chunks(n: int):
        for _ in range(n):
            yield b"x" * (1 << 20)

    async def run():
        small = await fs.add(chunks(2), "a.jsonl", "batch", "me", max_bytes=3 << 20)
        assert small.bytes == 2 << 20
        with pytest.raises(TooLarge):
            await fs.add(chunks(8), "b.jsonl", "batch", "me", max_bytes=3 << 20)
        assert [f.id for f in await fs.list("me")] == [small.id]
        assert await fs.list("someone else") == []

    asyncio.run(run())
