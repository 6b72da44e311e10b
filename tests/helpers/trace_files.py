"""Small synthetic trace files in the shared traces' formats, for bench scripts' tests."""

from __future__ import annotations

from pathlib import Path


def synthetic_trace_args(tmp_path: Path) -> list[str]:
    """An Azure-format online trace (600 requests, 10 a second) and a lengths-format
    offline pool (100 prompts) under ``tmp_path``, as the bench scripts' trace options."""
    online = tmp_path / "online.csv"
    online.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(
            f"2023-11-16 18:{k // 600:02d}:{k // 10 % 60:02d}.{k % 10}000000,"
            f"{200 + 37 * k % 900},{20 + 13 * k % 150}\n"
            for k in range(600)
        )
    )
    offline = tmp_path / "offline.csv"
    offline.write_text(
        "num_prefill_tokens,num_decode_tokens\n"
        + "".join(f"{1000 + 53 * k % 3000},{100 + 7 * k % 200}\n" for k in range(100))
    )
    return ["--online-trace-file", str(online), "--offline-trace-file", str(offline)]
