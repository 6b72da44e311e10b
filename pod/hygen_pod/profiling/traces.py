"""Readers for the public workload traces in ../shared/data (never copied into the repo).

Each reader returns plain request descriptions (arrival seconds, prompt and output
lengths) and fails with a message naming the missing file and the --data option.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


def default_data_dir() -> Path:
    """$HYGEN_DATA, else ../shared/data beside the checkout (the working directory's parent)."""
    if env := os.environ.get("HYGEN_DATA"):
        return Path(env)
    return Path.cwd().parent / "shared" / "data"


AZURE_CONV = "azure-llm-trace-2023/AzureLLMInferenceTrace_conv.csv"
ARXIV_STATS = "vidur/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
MOONCAKE_CONV = "mooncake-fast25/conversation_trace.jsonl"


@dataclass(frozen=True, slots=True)
class TraceRequest:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()  # Mooncake hash_ids: shared 512-token blocks


def data_file(data_dir: str | Path | None, rel: str) -> Path:
    base = Path(data_dir) if data_dir else default_data_dir()
    path = base / rel
    if not path.is_file():
        raise FileNotFoundError(
            f"trace file {path} not found: pass --data pointing at the shared data folder "
            f"(the one holding {rel.split('/')[0]}/)"
        )
    return path


def azure_conversation(data_dir: str | Path | None = None) -> list[TraceRequest]:
    """Azure LLM inference trace 2023, conversation: arrivals relative to the first."""
    return read_azure_csv(data_file(data_dir, AZURE_CONV))


def read_azure_csv(path: Path) -> list[TraceRequest]:
    """A CSV in the Azure LLM inference trace format (TIMESTAMP, ContextTokens, GeneratedTokens)."""
    out: list[TraceRequest] = []
    t0: datetime | None = None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            ts = datetime.fromisoformat(row["TIMESTAMP"][:26])
            t0 = t0 or ts
            out.append(
                TraceRequest(
                    (ts - t0).total_seconds(),
                    int(row["ContextTokens"]),
                    int(row["GeneratedTokens"]),
                )
            )
    return out


def arxiv_summarization(data_dir: str | Path | None = None) -> list[TraceRequest]:
    """arXiv summarization lengths (the paper's offline workload); no arrival times."""
    return read_lengths_csv(data_file(data_dir, ARXIV_STATS))


def read_lengths_csv(path: Path) -> list[TraceRequest]:
    """A CSV of request lengths in Vidur's processed-trace format (no arrival times)."""
    with path.open(newline="") as f:
        return [
            TraceRequest(0.0, int(r["num_prefill_tokens"]), int(r["num_decode_tokens"]))
            for r in csv.DictReader(f)
        ]


def mooncake_conversation(data_dir: str | Path | None = None) -> list[TraceRequest]:
    """Mooncake (FAST'25) conversation trace, with shared-prefix block ids."""
    return read_mooncake_jsonl(data_file(data_dir, MOONCAKE_CONV))


def read_mooncake_jsonl(path: Path) -> list[TraceRequest]:
    """JSON lines in the Mooncake format (timestamp ms, input/output length, hash_ids)."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(
                TraceRequest(
                    r["timestamp"] / 1000.0,
                    r["input_length"],
                    r["output_length"],
                    tuple(r.get("hash_ids", ())),
                )
            )
    return out


def read_trace_file(path: str | Path) -> list[TraceRequest]:
    """Any trace file in one of the formats above, told apart by its header / first line;
    a clear error for anything else."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file {p} not found")
    with p.open(newline="") as f:
        first = f.readline()
    if first.lstrip().startswith("{"):
        try:
            return read_mooncake_jsonl(p)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{p}: not a Mooncake-format JSONL trace ({e})") from None
    cols = {c.strip() for c in first.split(",")}
    try:
        if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
            return read_azure_csv(p)
        if {"num_prefill_tokens", "num_decode_tokens"} <= cols:
            return read_lengths_csv(p)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{p}: malformed trace row ({e})") from None
    raise ValueError(
        f"{p}: unknown trace format; expected an Azure LLM trace CSV (TIMESTAMP, "
        "ContextTokens, GeneratedTokens), a Vidur lengths CSV (num_prefill_tokens, "
        "num_decode_tokens) or Mooncake JSONL"
    )
