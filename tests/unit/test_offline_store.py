"""Durable offline store: batch lines queued atomically, results written once, crash-safe."""

from __future__ import annotations

import json

import pytest

from hygen_pod.contract.batch_input import BadLine, BatchLine, parse_batch_file
from hygen_pod.server.offline_store import Conflict, NotFound, OfflineStore

EP = "/v1/completions"


def _line(cid, url=EP, **body):
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body or {"p": 1}})


def test_parse_batch_file_fails_bad_lines_only() -> None:
    data = "\n".join(
        [
            _line("a"),
            "{not json",
            json.dumps({"method": "POST", "url": EP, "body": {}}),
            _line("a"),
            _line("w", url="/v1/embeddings"),
            json.dumps({"custom_id": "s", "url": EP, "body": {"stream": True}}),
            json.dumps({"custom_id": "m", "method": "GET", "url": EP, "body": {}}),
            json.dumps({"custom_id": "b", "url": EP, "body": [1]}),
            "",
            _line("z"),
        ]
    ).encode()
    items = parse_batch_file(data, EP)
    codes = [i.code if isinstance(i, BadLine) else "ok" for i in items]
    assert codes == [
        "ok",
        "invalid_json",
        "missing_custom_id",
        "duplicate_custom_id",
        "invalid_url",
        "invalid_body",
        "invalid_method",
        "invalid_body",
        "ok",
    ]
    assert [i.line for i in items if isinstance(i, BatchLine)] == [1, 10]
    dup = items[3]
    assert isinstance(dup, BadLine) and "'a'" in dup.message and "line 4" in dup.message


def test_oversized_line_fails_alone() -> None:
    big = json.dumps({"custom_id": "big", "url": EP, "body": {"prompt": "x" * (1 << 20)}})
    items = parse_batch_file((big + "\n" + _line("ok")).encode(), EP)
    assert isinstance(items[0], BadLine) and items[0].code == "line_too_long"
    assert isinstance(items[1], BatchLine)


def _batch(store: OfflineStore, n: int, bad: int = 0):
    lines = [_line(f"c{i}", prompt=f"p{i}") for i in range(n)] + ["{oops"] * bad
    f = store.add_file("\n".join(lines).encode(), "in.jsonl", "batch")
    return store.create_batch(f.id, EP, "24h")


def test_batch_queues_good_lines_and_fails_bad_ones(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    b = _batch(s, 3, bad=2)
    assert b.status == "in_progress"
    assert b.request_counts.model_dump() == {"total": 5, "completed": 0, "failed": 2}
    queued = s.next_queued(10, set())
    assert [q.id for q in queued] == [f"{b.id}:{i}" for i in (1, 2, 3)]
    assert s.next_queued(10, {queued[0].id})[0].id == queued[1].id


def test_result_is_written_once(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    b = _batch(s, 1)
    rid = f"{b.id}:1"
    assert s.complete(rid, 200, {"x": 1}, None)
    assert not s.complete(rid, 200, {"x": 2}, None)
    assert s.get_request(rid).response == {"x": 1}


def test_state_survives_a_crash_and_finalizes_one_line_per_custom_id(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    b = _batch(s, 4, bad=1)
    s.complete(f"{b.id}:1", 200, {"n": 1}, None)
    s.complete(f"{b.id}:2", 400, {"error": {"message": "bad"}}, {"code": "400", "message": "bad"})
    # No close(): the process "dies" here. A new store on the same directory resumes.
    s2 = OfflineStore(tmp_path)
    left = [q.id for q in s2.next_queued(10, set())]
    assert left == [f"{b.id}:3", f"{b.id}:4"]
    with pytest.raises(Conflict):
        s2.finalize_batch(b.id)
    for rid in left:
        assert s2.complete(rid, 200, {"rid": rid}, None)
    done = s2.finalize_batch(b.id)
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 5, "completed": 3, "failed": 2}
    out = [json.loads(x) for x in s2.file_content(done.output_file_id).decode().splitlines()]
    err = [json.loads(x) for x in s2.file_content(done.error_file_id).decode().splitlines()]
    assert [o["custom_id"] for o in out] == ["c0", "c2", "c3"]
    assert [e["custom_id"] for e in err] == ["c1", None]
    assert err[1]["error"]["code"] == "invalid_json"
    assert s2.finalize_batch(b.id).output_file_id == done.output_file_id  # idempotent


def test_cancel_closes_queued_requests(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    b = _batch(s, 3)
    s.complete(f"{b.id}:1", 200, {}, None)
    assert s.cancel_batch(b.id).status == "cancelling"
    assert s.next_queued(10, set()) == []  # nothing of a cancelling batch starts
    assert s.close_open_requests(b.id, "batch_cancelled", "cancelled") == 2
    done = s.finalize_batch(b.id)
    assert done.status == "cancelled"
    assert done.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}


def test_single_requests_are_idempotent(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    r, created = s.submit("job-1/0", EP, {"prompt": "a"})
    assert created and r.state == "queued"
    r2, created2 = s.submit("job-1/0", EP, {"prompt": "a"})
    assert not created2 and r2.id == r.id
    with pytest.raises(Conflict, match="different"):
        s.submit("job-1/0", EP, {"prompt": "b"})
    assert s.single_queued() == 1
    s.delete_request("job-1/0")
    with pytest.raises(NotFound):
        s.get_request("job-1/0")


def test_requests_by_prefix_are_listed_in_pages_and_forgotten_together(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    for rid in ("job-1-1", "job-1-2", "job-1-10", "job-10-1", "job-2-1", "job-0"):
        s.submit(rid, EP, {"prompt": rid})
    _batch(s, 2)  # batch lines are not single requests: never listed or forgotten here
    s.complete("job-1-2", 200, {"ok": 1}, None)
    ids = [r.id for r in s.list_requests("job-1-", None, 10)]
    assert ids == ["job-1-1", "job-1-10", "job-1-2"]  # id order; job-10-* is another prefix
    assert s.get_request("job-1-2").state == "done"
    assert [r.id for r in s.list_requests("job-1-", "job-1-1", 1)] == ["job-1-10"]
    assert [r.id for r in s.list_requests("job-1-", "job-1-2", 10)] == []
    assert len(s.list_requests("", None, 100)) == 6
    assert sorted(s.delete_prefix("job-1-")) == ["job-1-1", "job-1-10", "job-1-2"]
    assert [r.id for r in s.list_requests("job-", None, 10)] == ["job-0", "job-10-1", "job-2-1"]
    assert s.delete_prefix("job-1-") == []
    with pytest.raises(ValueError, match="every request"):
        s.delete_prefix("")
    assert s.depth()["queued"] == 3 + 2


def test_wrong_file_purpose_and_orphans(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    f = s.add_file(b"x", "a.txt", "fine-tune")
    with pytest.raises(Conflict, match="purpose"):
        s.create_batch(f.id, EP, "24h")
    (tmp_path / "files" / "file_orphan").write_bytes(b"half written")
    OfflineStore(tmp_path)
    assert not (tmp_path / "files" / "file_orphan").exists()
    assert (tmp_path / "files" / f.id).exists()


def test_batch_with_no_good_line_fails(tmp_path) -> None:
    s = OfflineStore(tmp_path)
    f = s.add_file(b"{bad\n", "in.jsonl", "batch")
    b = s.create_batch(f.id, EP, "24h")
    assert b.status == "failed" and b.errors and b.errors.data[0].code == "empty_batch"


def test_state_on_disk_is_owner_only(tmp_path) -> None:
    """Prompts and results are users' data: no other local user can read them."""
    root = tmp_path / "state"
    s = OfflineStore(root)
    f = s.add_file(b"x", "in.jsonl", "batch", owner="key_a")
    s.submit("r1", "/v1/completions", {"prompt": "p"})
    modes = {
        p.name: p.stat().st_mode & 0o777
        for p in (root, root / "files", root / "offline.db", root / "files" / f.id)
    }
    assert modes == {"state": 0o700, "files": 0o700, "offline.db": 0o600, f.id: 0o600}
    wal = root / "offline.db-wal"
    assert not wal.exists() or wal.stat().st_mode & 0o777 == 0o600
    s.close()


def test_files_and_batches_belong_to_their_owner(tmp_path) -> None:
    from hygen_pod.server.offline_store import NotFound

    s = OfflineStore(tmp_path)
    line = json.dumps({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x"}})
    f = s.add_file(line.encode(), "in.jsonl", "batch", owner="key_a")
    with pytest.raises(NotFound):
        s.create_batch(f.id, "/v1/completions", "24h", owner="key_b")  # not b's input
    b = s.create_batch(f.id, "/v1/completions", "24h", owner="key_a")
    for call in (
        lambda: s.get_file(f.id, "key_b"),
        lambda: s.file_content(f.id, "key_b"),
        lambda: s.delete_file(f.id, "key_b"),
        lambda: s.get_batch(b.id, "key_b"),
        lambda: s.cancel_batch(b.id, "key_b"),
    ):
        with pytest.raises(NotFound):
            call()
    assert s.list_files(owner="key_b") == [] and s.list_batches(owner="key_b") == []
    assert [x.id for x in s.list_files(owner="key_a")] == [f.id]
    assert s.get_batch(b.id, "key_a").id == b.id
    s.complete(f"{b.id}:1", 200, {"ok": 1}, None)
    out = s.finalize_batch(b.id).output_file_id
    assert out is not None and s.get_file(out, "key_a").purpose == "batch_output"
    with pytest.raises(NotFound):
        s.file_content(out, "key_b")


def test_a_result_is_written_only_under_the_generation_that_ran(tmp_path) -> None:
    """Deleted and posted again under the same id while the old request ran: the old
    request's result must not land on the new one."""
    s = OfflineStore(tmp_path)
    s.submit("r", "/v1/completions", {"prompt": "old"})
    (old,) = s.next_queued(1, set())
    s.delete_request("r")
    s.submit("r", "/v1/completions", {"prompt": "new"})
    assert not s.complete("r", 200, {"echo": "old"}, None, seq=old.seq)
    (new,) = s.next_queued(1, set())
    assert new.body == {"prompt": "new"} and new.seq != old.seq
    assert s.complete("r", 200, {"echo": "new"}, None, seq=new.seq)
    assert s.get_request("r").response == {"echo": "new"}


def test_a_digest_that_does_not_match_the_body_is_refused(tmp_path) -> None:
    from hygen_pod.contract.api import request_digest
    from hygen_pod.server.offline_store import BadDigest

    s = OfflineStore(tmp_path)
    good = request_digest("/v1/completions", {"prompt": "p"})
    with pytest.raises(BadDigest):
        s.submit("r", "/v1/completions", {"prompt": "other"}, good)
    res, created = s.submit("r", "/v1/completions", {"prompt": "p"}, good)
    assert created and res.digest == good
