"""Durable offline state of a pod: uploaded files, batches and offline requests (SQLite).

Why SQLite: each state change (a batch and all its lines queued, one result
written) is one transaction, so a ``kill -9`` at any instant leaves either the
old or the new state, never half of one. A request's result is written only
while the request is still ``queued`` (compare-and-set), so a result cannot be
recorded twice; requests that were running when the process died are still
``queued`` and run again after restart. File contents live beside the database
and are renamed into place before the row that names them commits.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hygen_pod.contract.api import (
    BatchErrorItem,
    BatchErrors,
    BatchObject,
    FileObject,
    OfflineResult,
    RequestCounts,
    batch_output_line,
    request_digest,
    window_seconds,
)
from hygen_pod.contract.batch_input import BatchLine, parse_batch_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, doc TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, batch_id TEXT, line INTEGER, custom_id TEXT,
    url TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
    status_code INTEGER, response TEXT, error TEXT,
    created_at REAL NOT NULL, finished_at REAL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS requests_queue ON requests (state, seq);
CREATE INDEX IF NOT EXISTS requests_batch ON requests (batch_id, line);
CREATE INDEX IF NOT EXISTS requests_batch_state ON requests (batch_id, state);
"""
# Columns added after the first release: (table, column, declaration), added on open.
_ADDED_COLUMNS = (
    ("files", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("batches", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("requests", "digest", "TEXT"),
)
TERMINAL = ("completed", "failed", "expired", "cancelled")


class NotFound(KeyError):
    """No such file, batch or request."""


class Conflict(ValueError):
    """The request conflicts with stored state (e.g. the same id with another body)."""


class BadDigest(ValueError):
    """A submitted digest does not match the submitted url and body."""


@dataclass(frozen=True)
class Queued:
    """A queued request as the runner starts it; ``seq`` tells re-posts of one id apart."""

    id: str
    url: str
    body: dict[str, Any]
    seq: int


def _private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only (or narrow an existing one to that)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        path.chmod(0o600)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class OfflineStore:
    """All offline state under one directory; every method is one transaction."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        # Prompts and results are users' data: owner-only directories and files. SQLite
        # gives its -wal/-shm files the database file's mode; uploads are made by mkstemp.
        for d in (self.root, self.files_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
        _private_file(self.root / "offline.db")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / "offline.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for table, col, decl in _ADDED_COLUMNS:
            cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if col not in cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM requests").fetchone()[0]
        self._remove_orphan_files()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _remove_orphan_files(self) -> None:
        """Content written just before a crash, whose row never committed."""
        known = {r[0] for r in self._db.execute("SELECT id FROM files")}
        for p in self.files_dir.iterdir():
            if p.name not in known:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------- files
    def _write_content(self, file_id: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.files_dir, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.files_dir / file_id)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add_file(self, data: bytes, filename: str, purpose: str, owner: str = "") -> FileObject:
        """Store an upload; ``owner`` (an API key's id, "" when keys are off) alone sees it."""
        fid = _new_id("file")
        self._write_content(fid, data)
        obj = FileObject(
            id=fid, bytes=len(data), created_at=int(time.time()), filename=filename, purpose=purpose
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (id, purpose, filename, bytes, created_at, owner)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (fid, purpose, filename, obj.bytes, obj.created_at, owner),
            )
        return obj

    _FILE_COLS = "SELECT id, purpose, filename, bytes, created_at FROM files"
    # Another owner's object is answered as missing (404), as OpenAI does across projects.
    _OWNED = "(? IS NULL OR owner = ?)"

    @staticmethod
    def _file_of(row: tuple) -> FileObject:
        return FileObject(
            id=row[0], purpose=row[1], filename=row[2], bytes=row[3], created_at=row[4]
        )

    def get_file(self, file_id: str, owner: str | None = None) -> FileObject:
        """A file; with ``owner``, only if it is that owner's (None: any, for internal use)."""
        with self._lock:
            row = self._db.execute(
                f"{self._FILE_COLS} WHERE id = ? AND {self._OWNED}", (file_id, owner, owner)
            ).fetchone()
        if row is None:
            raise NotFound(f"no file {file_id!r}")
        return self._file_of(row)

    def list_files(self, purpose: str | None = None, owner: str | None = None) -> list[FileObject]:
        with self._lock:
            rows = self._db.execute(
                f"{self._FILE_COLS} WHERE (? IS NULL OR purpose = ?) AND {self._OWNED}"
                " ORDER BY created_at",
                (purpose, purpose, owner, owner),
            ).fetchall()
        return [self._file_of(r) for r in rows]

    def file_content(self, file_id: str, owner: str | None = None) -> bytes:
        self.get_file(file_id, owner)
        return (self.files_dir / file_id).read_bytes()

    def delete_file(self, file_id: str, owner: str | None = None) -> None:
        self.get_file(file_id, owner)
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self.files_dir / file_id).unlink(missing_ok=True)

    # ----------------------------------------------------------- batches
    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        owner: str = "",
    ) -> BatchObject:
        """Parse the input file (``owner``'s own) and queue every good line, atomically
        with the batch, which belongs to ``owner`` too."""
        f = self.get_file(input_file_id, owner)
        if f.purpose != "batch":
            raise Conflict(f"file {input_file_id} has purpose {f.purpose!r}, not 'batch'")
        items = parse_batch_file(self.file_content(input_file_id), endpoint)
        now = time.time()
        bid = _new_id("batch")
        good = [i for i in items if isinstance(i, BatchLine)]
        batch = BatchObject(
            id=bid,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status="in_progress" if good else "failed",
            created_at=int(now),
            in_progress_at=int(now) if good else None,
            failed_at=None if good else int(now),
            expires_at=int(now) + window_seconds(completion_window),
            request_counts=RequestCounts(total=len(items), completed=0, failed=0),
            metadata=metadata,
        )
        if not good:
            batch.errors = BatchErrors(
                data=[
                    BatchErrorItem(code="empty_batch", message="no runnable line in the file"),
                    *[BatchErrorItem(code=b.code, message=b.message, line=b.line) for b in items][
                        :100
                    ],
                ]
            )
        with self._tx() as db:
            for it in items:
                self._seq += 1
                rid = f"{bid}:{it.line}"
                if isinstance(it, BatchLine):
                    db.execute(
                        "INSERT INTO requests (id, batch_id, line, custom_id, url, body, state,"
                        " created_at, seq) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                        (
                            rid,
                            bid,
                            it.line,
                            it.custom_id,
                            endpoint,
                            json.dumps(it.body),
                            now,
                            self._seq,
                        ),
                    )
                else:
                    db.execute(
                        "INSERT INTO requests (id, batch_id, line, custom_id, url, body, state,"
                        " status_code, error, created_at, finished_at, seq)"
                        " VALUES (?, ?, ?, ?, ?, 'null', 'failed', 400, ?, ?, ?, ?)",
                        (
                            rid,
                            bid,
                            it.line,
                            it.custom_id,
                            endpoint,
                            json.dumps({"code": it.code, "message": it.message}),
                            now,
                            now,
                            self._seq,
                        ),
                    )
            db.execute(
                "INSERT INTO batches (id, doc, status, owner) VALUES (?, ?, ?, ?)",
                (bid, batch.model_dump_json(), batch.status, owner),
            )
        return self.get_batch(bid)

    def _batch_doc(self, batch_id: str, owner: str | None = None) -> BatchObject:
        row = self._db.execute(
            f"SELECT doc FROM batches WHERE id = ? AND {self._OWNED}", (batch_id, owner, owner)
        ).fetchone()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}")
        return BatchObject.model_validate_json(row[0])

    def get_batch(self, batch_id: str, owner: str | None = None) -> BatchObject:
        with self._lock:
            b = self._batch_doc(batch_id, owner)
            if b.status not in TERMINAL:
                b.request_counts = self._counts(batch_id)
        return b

    def _counts(self, batch_id: str) -> RequestCounts:
        rows = dict(
            self._db.execute(
                "SELECT state, COUNT(*) FROM requests WHERE batch_id = ? GROUP BY state",
                (batch_id,),
            ).fetchall()
        )
        return RequestCounts(
            total=sum(rows.values()),
            completed=rows.get("done", 0),
            failed=rows.get("failed", 0) + rows.get("cancelled", 0),
        )

    def list_batches(
        self, limit: int = 20, after: str | None = None, owner: str | None = None
    ) -> list[BatchObject]:
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    f"SELECT id FROM batches WHERE {self._OWNED} ORDER BY rowid DESC",
                    (owner, owner),
                )
            ]
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        return [self.get_batch(i) for i in ids[:limit]]

    def _save_batch(self, db: sqlite3.Connection, b: BatchObject) -> None:
        db.execute(
            "UPDATE batches SET doc = ?, status = ? WHERE id = ?",
            (b.model_dump_json(), b.status, b.id),
        )

    def cancel_batch(self, batch_id: str, owner: str | None = None) -> BatchObject:
        """Mark a batch cancelling; its queued requests stop and it finalizes as cancelled."""
        with self._tx() as db:
            b = self._batch_doc(batch_id, owner)
            if b.status in ("in_progress", "validating"):
                b.status = "cancelling"
                b.cancelling_at = int(time.time())
                self._save_batch(db, b)
        return self.get_batch(batch_id)

    def open_batches(self) -> list[tuple[str, str, int | None]]:
        """(id, status, expires_at) of every batch still in progress or cancelling."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM batches WHERE status IN ('in_progress', 'cancelling')"
            ).fetchall()
            docs = [self._batch_doc(r[0]) for r in rows]
        return [(b.id, b.status, b.expires_at) for b in docs]

    def close_open_requests(self, batch_id: str, code: str, message: str) -> int:
        """Cancel a batch's still-queued requests (cancel or expiry)."""
        now = time.time()
        err = json.dumps({"code": code, "message": message})
        with self._tx() as db:
            cur = db.execute(
                "UPDATE requests SET state = 'cancelled', error = ?, finished_at = ?"
                " WHERE batch_id = ? AND state = 'queued'",
                (err, now, batch_id),
            )
            return cur.rowcount

    def queued_count(self, batch_id: str) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM requests WHERE batch_id = ? AND state = 'queued'", (batch_id,)
            ).fetchone()[0]

    def finalize_batch(self, batch_id: str, *, expired: bool = False) -> BatchObject:
        """Write the output and error files of a batch with no queued request left.

        One line per custom_id, in input order. Idempotent: a batch already final
        is returned unchanged. ``expired``: it ran out of its completion window.
        """
        with self._lock:
            b = self._batch_doc(batch_id)
            if b.status in TERMINAL:
                return b
            rows = self._db.execute(
                "SELECT id, custom_id, state, status_code, response, error FROM requests"
                " WHERE batch_id = ? ORDER BY line",
                (batch_id,),
            ).fetchall()
        if any(r[2] == "queued" for r in rows):
            raise Conflict(f"batch {batch_id} still has queued requests")
        out_lines, err_lines = [], []
        for rid, cid, state, code, resp, err in rows:
            line = batch_output_line(
                f"batch_req_{rid.rsplit(':', 1)[-1]}_{batch_id[6:]}",
                cid,
                rid,
                code,
                json.loads(resp) if resp else None,
                json.loads(err) if err else None,
            )
            (out_lines if state == "done" else err_lines).append(json.dumps(line))
        now = int(time.time())
        new_files: list[tuple[str, bytes, str]] = []
        for lines, kind in ((out_lines, "output"), (err_lines, "error")):
            if lines:
                new_files.append(
                    (
                        _new_id("file"),
                        ("\n".join(lines) + "\n").encode(),
                        f"{batch_id}_{kind}.jsonl",
                    )
                )
        for fid, data, _ in new_files:
            self._write_content(fid, data)
        with self._tx() as db:
            b = self._batch_doc(batch_id)
            if b.status in TERMINAL:  # finalized concurrently: drop our files
                for fid, _, _ in new_files:
                    (self.files_dir / fid).unlink(missing_ok=True)
                return b
            (owner,) = db.execute("SELECT owner FROM batches WHERE id = ?", (batch_id,)).fetchone()
            for fid, data, name in new_files:
                db.execute(
                    "INSERT INTO files (id, purpose, filename, bytes, created_at, owner)"
                    " VALUES (?, 'batch_output', ?, ?, ?, ?)",
                    (fid, name, len(data), now, owner),
                )
                if name.endswith("_output.jsonl"):
                    b.output_file_id = fid
                else:
                    b.error_file_id = fid
            b.request_counts = self._counts(batch_id)
            if b.status == "cancelling":
                b.status, b.cancelled_at = "cancelled", now
            elif expired:
                b.status, b.expired_at = "expired", now
            else:
                b.status, b.completed_at = "completed", now
            b.finalizing_at = now
            self._save_batch(db, b)
        return b

    # ------------------------------------------------------ offline requests
    def submit(
        self, rid: str, url: str, body: dict[str, Any], digest: str | None = None
    ) -> tuple[OfflineResult, bool]:
        """Queue a single offline request; (stored request, created). Same id and body: no-op.

        The request's digest is stored with it; a ``digest`` given that does not match
        ``url`` and ``body`` is refused (BadDigest), so nothing unverifiable is queued.
        """
        mine = request_digest(url, body)
        if digest is not None and digest != mine:
            raise BadDigest(f"digest does not match the url and body of request {rid!r}")
        encoded = json.dumps(body, sort_keys=True)
        with self._tx() as db:
            row = db.execute("SELECT url, body FROM requests WHERE id = ?", (rid,)).fetchone()
            if row is not None:
                if row[0] != url or json.dumps(json.loads(row[1]), sort_keys=True) != encoded:
                    raise Conflict(f"request {rid!r} already exists with a different url or body")
                created = False
            else:
                self._seq += 1
                db.execute(
                    "INSERT INTO requests (id, url, body, state, created_at, seq, digest)"
                    " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                    (rid, url, encoded, time.time(), self._seq, mine),
                )
                created = True
        return self.get_request(rid), created

    def submit_many(
        self, subs: list[tuple[str, str, dict[str, Any], str | None]], room: int
    ) -> list[tuple[int, OfflineResult | None, str | None]]:
        """Queue many single requests in one transaction: (status, stored, error) each.

        Each gets the status its own `submit` would have: 202 queued, 200 already stored,
        400 digest mismatch, 409 another body under the id; past ``room`` new ones, 429.
        """
        out: list[tuple[int, str | None]] = []
        with self._tx() as db:
            for rid, url, body, digest in subs:
                mine = request_digest(url, body)
                if digest is not None and digest != mine:
                    out.append((400, f"digest does not match the url and body of {rid!r}"))
                    continue
                encoded = json.dumps(body, sort_keys=True)
                row = db.execute("SELECT url, body FROM requests WHERE id = ?", (rid,)).fetchone()
                if row is not None:
                    same = row[0] == url and (
                        json.dumps(json.loads(row[1]), sort_keys=True) == encoded
                    )
                    out.append((200, None) if same else (409, f"{rid!r} holds another body"))
                    continue
                if room <= 0:
                    out.append((429, "offline queue is full; retry later"))
                    continue
                self._seq += 1
                db.execute(
                    "INSERT INTO requests (id, url, body, state, created_at, seq, digest)"
                    " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                    (rid, url, encoded, time.time(), self._seq, mine),
                )
                room -= 1
                out.append((202, None))
        return [
            (code, self.get_request(sub[0]) if code in (200, 202) else None, err)
            for sub, (code, err) in zip(subs, out, strict=True)
        ]

    def delete_many(self, ids: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Forget single requests in one transaction: (deleted, missing, refused), where
        refused ones belong to an OpenAI batch (cancel the batch instead)."""
        deleted, missing, refused = [], [], []
        with self._tx() as db:
            for rid in dict.fromkeys(ids):
                row = db.execute("SELECT batch_id FROM requests WHERE id = ?", (rid,)).fetchone()
                if row is None:
                    missing.append(rid)
                elif row[0] is not None:
                    refused.append(rid)
                else:
                    db.execute("DELETE FROM requests WHERE id = ?", (rid,))
                    deleted.append(rid)
        return deleted, missing, refused

    _RESULT_COLUMNS = (
        "id, state, url, custom_id, batch_id, status_code, response, error, created_at,"
        " finished_at, digest"
    )

    @staticmethod
    def _result_of(row: tuple) -> OfflineResult:
        return OfflineResult(
            id=row[0],
            state=row[1],
            url=row[2],
            custom_id=row[3],
            batch_id=row[4],
            status_code=row[5],
            response=json.loads(row[6]) if row[6] else None,
            error=json.loads(row[7]) if row[7] else None,
            created_at=row[8],
            finished_at=row[9],
            digest=row[10],
        )

    def get_request(self, rid: str) -> OfflineResult:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._RESULT_COLUMNS} FROM requests WHERE id = ?", (rid,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no offline request {rid!r}")
        return self._result_of(row)

    def list_requests(self, prefix: str, after: str | None, limit: int) -> list[OfflineResult]:
        """Single requests whose id starts with ``prefix``, in id order, after ``after``.

        One call tells a dispatcher what a pod holds of its job (``<job uid>-``): finished
        results to collect, queued work to adopt after a restart, and what the pod lost.
        """
        lo, hi = _prefix_range(prefix)
        where, args = ["batch_id IS NULL", "id >= ?"], [lo]
        if hi is not None:
            where, args = [*where, "id < ?"], [*args, hi]
        if after is not None:
            where, args = [*where, "id > ?"], [*args, after]
        sql = f"SELECT {self._RESULT_COLUMNS} FROM requests WHERE {' AND '.join(where)}"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [self._result_of(r) for r in rows]

    def delete_prefix(self, prefix: str) -> list[str]:
        """Forget every single request whose id starts with ``prefix``; returns their ids.

        Queued ones can no longer start once this commits; the caller cancels running ones.
        """
        lo, hi = _prefix_range(prefix)
        if hi is None:
            raise ValueError("an empty prefix would delete every request")
        where = "WHERE batch_id IS NULL AND id >= ? AND id < ?"
        with self._tx() as db:
            ids = [r[0] for r in db.execute(f"SELECT id FROM requests {where}", (lo, hi))]
            db.execute(f"DELETE FROM requests {where}", (lo, hi))
        return ids

    def delete_request(self, rid: str) -> OfflineResult:
        """Forget a single request (ack of a result, or cancel of a queued one)."""
        r = self.get_request(rid)
        if r.batch_id is not None:
            raise Conflict(f"request {rid!r} belongs to batch {r.batch_id}; cancel the batch")
        with self._tx() as db:
            db.execute("DELETE FROM requests WHERE id = ?", (rid,))
        return r

    def next_queued(self, limit: int, exclude: set[str]) -> list[Queued]:
        """Oldest queued requests not in ``exclude`` (running) and not of a cancelling batch."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT r.id, r.url, r.body, r.seq FROM requests r LEFT JOIN batches b"
                " ON r.batch_id = b.id WHERE r.state = 'queued'"
                " AND (b.status IS NULL OR b.status = 'in_progress') ORDER BY r.seq LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        return [Queued(r[0], r[1], json.loads(r[2]), r[3]) for r in rows if r[0] not in exclude][
            :limit
        ]

    def complete(
        self,
        rid: str,
        status_code: int,
        response: dict | None,
        error: dict | None,
        *,
        seq: int | None = None,
    ) -> bool:
        """Record a result if the request is still queued (and, given ``seq``, is still that
        generation of the id); False if it was not: no double write, no result under an id
        that was deleted and posted again while the old request ran."""
        return self.complete_many([(rid, status_code, response, error, seq)])[0]

    def complete_many(
        self, results: list[tuple[str, int, dict | None, dict | None, int | None]]
    ) -> list[bool]:
        """`complete` for many results in one transaction (one fsync): what lets a pod
        record hundreds of results a second. Each is written or not on its own terms."""
        out = []
        with self._tx() as db:
            for rid, status_code, response, error, seq in results:
                state = "done" if error is None and 200 <= status_code < 300 else "failed"
                cur = db.execute(
                    "UPDATE requests SET state = ?, status_code = ?, response = ?, error = ?,"
                    " finished_at = ? WHERE id = ? AND state = 'queued'"
                    " AND (? IS NULL OR seq = ?)",
                    (
                        state,
                        status_code,
                        json.dumps(response) if response is not None else None,
                        json.dumps(error) if error is not None else None,
                        time.time(),
                        rid,
                        seq,
                        seq,
                    ),
                )
                out.append(cur.rowcount == 1)
        return out

    def depth(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM requests GROUP BY state"
            ).fetchall()
        return {s: 0 for s in ("queued", "done", "failed", "cancelled")} | dict(rows)

    def single_queued(self) -> int:
        """Queued requests pushed one by one (not part of a batch): the backpressure count."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM requests WHERE batch_id IS NULL AND state = 'queued'"
            ).fetchone()[0]


def _prefix_range(prefix: str) -> tuple[str, str | None]:
    """[lo, hi) of the ids starting with ``prefix`` (an index range; hi None: no bound)."""
    if not prefix:
        return "", None
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
