"""Vidur's measured per-operator GPU times (../shared/data/vidur/profiling): a second,
independent oracle used to cross-check the kernel tables the simulator charges."""

from __future__ import annotations

import csv
from bisect import bisect_left
from pathlib import Path

from hygen_pod.profiling.traces import data_file

# Per-layer, non-attention operators of a Llama block as Vidur names them.
LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)


class VidurMLP:
    """Non-attention time of a whole model forward for ``n`` tokens, from Vidur's MLP table
    (median per operator, linear interpolation between measured token counts)."""

    def __init__(
        self,
        model: str = "meta-llama/Meta-Llama-3-8B",
        gpu: str = "a100",
        layers: int = 32,
        tp: int = 1,
        data_dir: str | Path | None = None,
    ) -> None:
        path = data_file(data_dir, f"vidur/profiling/compute/{gpu}/{model}/mlp.csv")
        rows = [
            r for r in csv.DictReader(path.open()) if int(r["num_tensor_parallel_workers"]) == tp
        ]
        if not rows:
            raise ValueError(f"{path}: no rows for tensor parallel size {tp}")
        rows.sort(key=lambda r: int(r["num_tokens"]))
        self.tokens = [int(r["num_tokens"]) for r in rows]
        self.ms = [
            layers * sum(float(r[f"time_stats.{op}.median"]) for op in LAYER_OPS)
            + float(r["time_stats.emb.median"])
            for r in rows
        ]

    def forward_ms(self, n: int) -> float:
        if n <= self.tokens[0]:
            return self.ms[0]
        if n >= self.tokens[-1]:
            return self.ms[-1] * n / self.tokens[-1]
        i = bisect_left(self.tokens, n)
        t0, t1 = self.tokens[i - 1], self.tokens[i]
        w = (n - t0) / (t1 - t0)
        return self.ms[i - 1] * (1 - w) + self.ms[i] * w
