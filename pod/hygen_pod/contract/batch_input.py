"""Parse an OpenAI batch input file (JSONL) line by line.

A bad line fails on its own (it becomes an error-file entry); the rest of the
batch still runs. Checks here are structural (JSON, custom_id, method, url,
body); the body itself is validated by the engine's request models when it runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
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


@dataclass
class BatchParser:
    """Parses lines in file order, remembering custom_ids (a later repeat is a BadLine):
    what lets a file be read as a stream, line by line, with the rules of a whole read."""

    endpoint: str
    seen: set[str] = field(default_factory=set)

    def parse(self, no: int, raw: bytes) -> BatchLine | BadLine | None:
        """Line ``no`` (1-based); None for a blank line."""
        if not raw.strip():
            return None
        item = _parse_line(no, raw, self.endpoint)
        if isinstance(item, BatchLine):
            if item.custom_id in self.seen:
                return BadLine(
                    no,
                    item.custom_id,
                    "duplicate_custom_id",
                    f"line {no}: custom_id {item.custom_id!r} already used by an earlier line",
                )
            self.seen.add(item.custom_id)
        return item


def parse_batch_file(data: bytes, endpoint: str) -> list[BatchLine | BadLine]:
    """Every non-blank line of ``data`` as a BatchLine or a BadLine, in file order."""
    parser = BatchParser(endpoint)
    items = (parser.parse(no, raw) for no, raw in enumerate(data.split(b"\n"), start=1))
    return [it for it in items if it is not None]


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, bytes) of a stream of chunks, holding at most one line at a time.

    A line longer than MAX_LINE_BYTES is cut to MAX_LINE_BYTES + 1 bytes as it streams
    (the parser then refuses it as too long), so no line can make the reader buffer more.
    """
    no, buf, cut = 1, bytearray(), False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not cut:
                buf += piece[: MAX_LINE_BYTES + 1 - len(buf)]
                cut = len(buf) > MAX_LINE_BYTES
            if end < 0:
                break
            yield no, bytes(buf)
            no, buf, cut, start = no + 1, bytearray(), False, end + 1
    if buf:
        yield no, bytes(buf)


def _parse_line(no: int, raw: bytes, endpoint: str) -> BatchLine | BadLine:
    if len(raw) > MAX_LINE_BYTES:
        return BadLine(no, None, "line_too_long", f"line {no}: longer than {MAX_LINE_BYTES} bytes")
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
