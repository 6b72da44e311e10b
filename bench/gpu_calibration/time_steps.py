"""Time the simulator's step shapes on a real GPU with a Llama-3.1-8B-shaped forward.

Runs on the lent GPU machine, which has torch but neither vLLM nor this package: torch and
the standard library only. The model is Llama-3.1-8B's shape with random bf16 weights (no
download): per layer a fused QKV GEMM, RoPE, the new K/V written into a per-layer cache,
one varlen FlashAttention call over every request of the step (causal, bottom-right, as
vLLM's flash backend runs chunked prefills and decodes together), O projection, SwiGLU MLP;
logits for each request's last token and a greedy pick, as vLLM's v1 runner does. It is
not vLLM: no paged cache, no fused norms; see docs/benchmarks.md for what that leaves out.

For each shape in shapes.json: eager timing and CUDA-graph replays (vLLM captures graphs),
GPU time by CUDA events. Then long replays of three shapes (the tail of step-time jitter)
and the run of consecutive steps replayed as an engine loop would (inputs copied per
step, synchronised per step, host wall time). Results are appended as JSON lines to
$OUT/times.jsonl as they come, so a run cut short still reports what it measured.

    python bench/gpu_calibration/time_steps.py [--shapes FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 4096, 14336, 32, 32, 8, 128, 128256
DT = torch.bfloat16


def flash(q, k, v, cu_q, cu_k, max_q, max_k, causal=True):
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False, scale=HEAD_DIM**-0.5
    )
    return out[0]


def check_flash(dev) -> dict:
    """Bottom-right causal alignment and grouped-query heads, against an fp32 reference."""
    torch.manual_seed(0)
    nq, nk, hq, hk = 4, 10, 4, 2
    q = torch.randn(nq, hq, HEAD_DIM, device=dev, dtype=DT)
    k = torch.randn(nk, hk, HEAD_DIM, device=dev, dtype=DT)
    v = torch.randn(nk, hk, HEAD_DIM, device=dev, dtype=DT)
    cu_q = torch.tensor([0, nq], device=dev, dtype=torch.int32)
    cu_k = torch.tensor([0, nk], device=dev, dtype=torch.int32)
    got = flash(q, k, v, cu_q, cu_k, nq, nk).float()
    kk = k.float().repeat_interleave(hq // hk, dim=1)
    vv = v.float().repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("qhd,khd->hqk", q.float(), kk) * HEAD_DIM**-0.5
    i = torch.arange(nq, device=dev)[:, None]
    j = torch.arange(nk, device=dev)[None, :]
    ref_br = torch.einsum("hqk,khd->qhd", s.masked_fill(j > i + nk - nq, -1e30).softmax(-1), vv)
    ref_tl = torch.einsum("hqk,khd->qhd", s.masked_fill(j > i, -1e30).softmax(-1), vv)
    return {
        "bottom_right_err": float((got - ref_br).abs().max()),
        "top_left_err": float((got - ref_tl).abs().max()),
    }


class Model:
    """Random bf16 weights of Llama-3.1-8B's shape, with a per-layer K/V cache."""

    def __init__(self, dev, kv_tokens: int) -> None:
        g = torch.Generator(device=dev).manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, device=dev, dtype=DT, generator=g) * 0.02).contiguous()

        self.embed = w(VOCAB, HIDDEN)
        self.lm_head = w(VOCAB, HIDDEN)
        self.norm = torch.ones(HIDDEN, device=dev, dtype=DT)
        qkv = (HEADS + 2 * KV_HEADS) * HEAD_DIM
        self.layers = [
            {
                "ln1": torch.ones(HIDDEN, device=dev, dtype=DT),
                "ln2": torch.ones(HIDDEN, device=dev, dtype=DT),
                "qkv": w(qkv, HIDDEN),
                "o": w(HIDDEN, HEADS * HEAD_DIM),
                "gu": w(2 * INTER, HIDDEN),
                "down": w(HIDDEN, INTER),
                "k": torch.empty(kv_tokens, KV_HEADS, HEAD_DIM, device=dev, dtype=DT),
                "v": torch.empty(kv_tokens, KV_HEADS, HEAD_DIM, device=dev, dtype=DT),
            }
            for _ in range(LAYERS)
        ]
        for L in self.layers:  # keys/values finite, so softmax timing is the usual path
            L["k"].normal_(generator=g)
            L["v"].normal_(generator=g)

    def forward(self, b: dict) -> torch.Tensor:
        T = b["ids"].shape[0]
        x = self.embed[b["ids"]]
        cos, sin = b["cos"], b["sin"]
        for L in self.layers:
            h = F.rms_norm(x, (HIDDEN,), L["ln1"], 1e-5)
            qkv = F.linear(h, L["qkv"])
            q = qkv[:, : HEADS * HEAD_DIM].view(T, HEADS, HEAD_DIM)
            k = qkv[:, HEADS * HEAD_DIM : (HEADS + KV_HEADS) * HEAD_DIM].view(T, KV_HEADS, HEAD_DIM)
            v = qkv[:, (HEADS + KV_HEADS) * HEAD_DIM :].view(T, KV_HEADS, HEAD_DIM)
            q = q * cos + torch.cat((-q[..., 64:], q[..., :64]), -1) * sin
            k = k * cos + torch.cat((-k[..., 64:], k[..., :64]), -1) * sin
            L["k"].index_copy_(0, b["slots"], k)
            L["v"].index_copy_(0, b["slots"], v.contiguous())
            nk = b["total_k"]
            o = flash(q, L["k"][:nk], L["v"][:nk], b["cu_q"], b["cu_k"], b["max_q"], b["max_k"])
            x = x + F.linear(o.reshape(T, HEADS * HEAD_DIM), L["o"])
            h = F.rms_norm(x, (HIDDEN,), L["ln2"], 1e-5)
            gu = F.linear(h, L["gu"])
            x = x + F.linear(F.silu(gu[:, :INTER]) * gu[:, INTER:], L["down"])
        last = F.rms_norm(x[b["last"]], (HIDDEN,), self.norm, 1e-5)
        return F.linear(last, self.lm_head).argmax(-1)


def inputs(shape: dict, dev) -> dict:
    """Static device tensors for one step: prefill chunks then decodes, keys laid out
    request after request in each layer's cache."""
    q_lens, k_lens, pos = [], [], []
    for c, p in shape["prefills"]:
        q_lens.append(c)
        k_lens.append(p + c)
        pos += range(p, p + c)
    for ctx in shape["decodes"]:
        q_lens.append(1)
        k_lens.append(ctx)
        pos.append(ctx - 1)
    slots, off = [], 0
    for ql, kl in zip(q_lens, k_lens, strict=True):
        slots += range(off + kl - ql, off + kl)
        off += kl
    cu_q = [0]
    cu_k = [0]
    for ql, kl in zip(q_lens, k_lens, strict=True):
        cu_q.append(cu_q[-1] + ql)
        cu_k.append(cu_k[-1] + kl)
    T = len(pos)
    positions = torch.tensor(pos, device=dev, dtype=torch.float32)
    inv = 500000.0 ** (-torch.arange(0, 64, device=dev, dtype=torch.float32) / 64)
    ang = positions[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), -1)[:, None, :]
    return {
        "ids": torch.randint(0, VOCAB, (T,), device=dev),
        "cos": ang.cos().to(DT),
        "sin": ang.sin().to(DT),
        "slots": torch.tensor(slots, device=dev, dtype=torch.long),
        "cu_q": torch.tensor(cu_q, device=dev, dtype=torch.int32),
        "cu_k": torch.tensor(cu_k, device=dev, dtype=torch.int32),
        "max_q": max(q_lens),
        "max_k": max(k_lens),
        "total_k": cu_k[-1],
        "last": torch.tensor(cu_q[1:], device=dev, dtype=torch.long) - 1,
    }


def gpu_ms(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def graphed(model: Model, b: dict):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        model.forward(b)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model.forward(b)
    return g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=Path, default=Path(__file__).parent / "shapes.json")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/out")))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--long-reps", type=int, default=300)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sink = (args.out / "times.jsonl").open("a")

    def emit(doc: dict) -> None:
        sink.write(json.dumps(doc) + "\n")
        sink.flush()

    t0 = time.perf_counter()
    doc = json.loads(args.shapes.read_text())
    shapes, sequence = doc["shapes"], doc["sequence"]
    dev = torch.device("cuda")
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit",
                "--format=csv",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except Exception as e:
        smi = f"nvidia-smi failed: {e}"
    emit(
        {
            "kind": "env",
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(),
            "nvidia_smi": smi,
            "flash_check": check_flash(dev),
        }
    )

    def k_tokens(s: dict) -> int:
        return sum(p + c for c, p in s["prefills"]) + sum(s["decodes"])

    kv = max(k_tokens(s) for s in shapes + sequence) + 16
    with torch.no_grad():
        model = Model(dev, kv)
    torch.cuda.synchronize()
    emit(
        {
            "kind": "model",
            "kv_tokens": kv,
            "init_s": round(time.perf_counter() - t0, 1),
            "mem_gib": round(torch.cuda.memory_allocated() / 2**30, 1),
        }
    )
    with torch.no_grad():
        for i, s in enumerate(shapes):
            try:
                b = inputs(s, dev)
                fwd = lambda b=b: model.forward(b)  # noqa: E731
                gpu_ms(fwd, 2)  # warm-up
                eager = gpu_ms(fwd, 5)
            except Exception as e:
                emit({"kind": "shape", "i": i, "error": repr(e)[:300]})
                torch.cuda.empty_cache()
                continue
            rec = {"kind": "shape", "i": i, "eager_ms": eager}
            try:
                g = graphed(model, b)
                gpu_ms(g.replay, 1)
                rec["graph_ms"] = gpu_ms(g.replay, args.reps)
                del g
            except Exception as e:
                rec["graph_error"] = repr(e)[:300]
            emit(rec)
            if i % 20 == 0:
                print(f"[{time.perf_counter() - t0:.0f}s] shape {i}/{len(shapes)}", flush=True)
        # the jitter tail: many replays of a few shapes
        picks = {"decode x64": None, "mixed 2048+64": None, "hygen median": None}
        for i, s in enumerate(shapes):
            if s["source"] == "grid" and not s["prefills"] and len(s["decodes"]) == 64:
                picks["decode x64"] = i
            if s["source"] == "grid" and s["prefills"] == [[2048, 0]] and len(s["decodes"]) == 64:
                picks["mixed 2048+64"] = i
        hy = [i for i, s in enumerate(shapes) if s["source"].startswith("hygen 4")]
        picks["hygen median"] = hy[len(hy) // 2] if hy else None
        for name, i in picks.items():
            if i is None:
                continue
            b = inputs(shapes[i], dev)
            try:
                g = graphed(model, b)
                gpu_ms(g.replay, 3)
                ms = gpu_ms(g.replay, args.long_reps)
                del g
            except Exception:
                ms = gpu_ms(lambda b=b: model.forward(b), args.long_reps)
            emit({"kind": "long", "name": name, "i": i, "ms": ms})
            print(f"[{time.perf_counter() - t0:.0f}s] long {name}", flush=True)
        # consecutive steps as an engine loop runs them: inputs built and copied per step
        host = []
        for s in sequence:
            torch.cuda.synchronize()
            a = time.perf_counter()
            b = inputs(s, dev)
            model.forward(b)
            torch.cuda.synchronize()
            host.append((time.perf_counter() - a) * 1e3)
        emit({"kind": "sequence", "host_ms": host})
        print(
            f"[{time.perf_counter() - t0:.0f}s] sequence of {len(host)} steps, "
            f"median {statistics.median(host):.2f} ms",
            flush=True,
        )
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
