"""Parse an OpenAI batch input file (JSONL) line by line.

A bad line fails on its own (it becomes an error-file entry); the rest of the
batch still runs. Checks here are structural (JSON, custom_id, method, url,
body); the body itself is validated by the engine's request models when it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_LINE_BYTES = 1 << 20  # one request line; larger lines fail on their own


@dataclass(frozen=True)
class BatchLine:
    """A structurally valid line: runs as an offline request."""

    line: int  # 1-based line number in the input file
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BadLine:
    """A line that cannot run: goes to the error file with this code and message."""

    line: int
    custom_id: str | None
    code: str
    message: str


def parse_batch_file(data: bytes, endpoint: str) -> list[BatchLine | BadLine]:
    """Every non-blank line of ``data`` as a BatchLine or a BadLine, in file order."""
    out: list[BatchLine | BadLine] = []
    seen: set[str] = set()
    for no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        item = _parse_line(no, raw, endpoint)
        if isinstance(item, BatchLine):
            if item.custom_id in seen:
                item = BadLine(
                    no,
                    item.custom_id,
                    "duplicate_custom_id",
                    f"line {no}: custom_id {item.custom_id!r} already used by an earlier line",
                )
            else:
                seen.add(item.custom_id)
        out.append(item)
    return out


def _parse_line(no: int, raw: bytes, endpoint: str) -> BatchLine | BadLine:
    if len(raw) > MAX_LINE_BYTES:
        return BadLine(no, None, "line_too_long", f"line {no}: {len(raw)} bytes > {MAX_LINE_BYTES}")
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return BadLine(no, None, "invalid_json", f"line {no}: not valid JSON: {e}")
    if not isinstance(obj, dict):
        return BadLine(no, None, "invalid_request", f"line {no}: expected a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return BadLine(
            no, None, "missing_custom_id", f"line {no}: custom_id must be a non-empty string"
        )
    if obj.get("method", "POST") != "POST":
        return BadLine(no, cid, "invalid_method", f"line {no}: method must be POST")
    url = obj.get("url")
    if url != endpoint:
        return BadLine(
            no,
            cid,
            "invalid_url",
            f"line {no}: url {url!r} does not match the batch endpoint {endpoint!r}",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return BadLine(no, cid, "invalid_body", f"line {no}: body must be a JSON object")
    if body.get("stream"):
        return BadLine(no, cid, "invalid_body", f"line {no}: body.stream is not allowed in a batch")
    return BatchLine(no, cid, body)
