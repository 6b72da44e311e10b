"""bench/gpu_calibration/time_steps.py on the CPU, shrunk: the batch layout a GPU run times.

The script runs only on a lent GPU (CUDA-only flash attention, events and graphs), and a
lent GPU gives a session 15 minutes in all, so what can be checked without one is checked
here: a model of the same structure at a tiny size, with the varlen attention replaced by
a reference of the same contract (bottom-right causal, grouped-query heads)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.helpers.bench_script import load_bench

torch = pytest.importorskip("torch")

# prefill chunks (chunk, computed) then decodes (context, the new token included)
SHAPE = {"prefills": [[5, 3], [4, 0]], "decodes": [7, 2]}


def reference_flash(q, k, v, cu_q, cu_k, max_q, max_k, causal=True):
    """Varlen attention as the GPU call computes it: each request's queries are the last
    of its keys (bottom-right causal), query heads share key heads in groups."""
    out = torch.empty_like(q)
    group = q.shape[1] // k.shape[1]
    for i in range(len(cu_q) - 1):
        qs = q[cu_q[i] : cu_q[i + 1]].float()
        ks = k[cu_k[i] : cu_k[i + 1]].float().repeat_interleave(group, dim=1)
        vs = v[cu_k[i] : cu_k[i + 1]].float().repeat_interleave(group, dim=1)
        nq, nk = qs.shape[0], ks.shape[0]
        s = torch.einsum("qhd,khd->hqk", qs, ks) * q.shape[-1] ** -0.5
        a = torch.arange(nq)[:, None]
        b = torch.arange(nk)[None, :]
        p = s.masked_fill(b > a + nk - nq, -1e30).softmax(-1)
        out[cu_q[i] : cu_q[i + 1]] = torch.einsum("hqk,khd->qhd", p, vs).to(q.dtype)
    return out


@pytest.fixture
def ts(monkeypatch) -> ModuleType:
    module = load_bench("gpu_calibration/time_steps")
    # HEAD_DIM stays 128: the rotary embedding splits each head in halves of 64
    for name, value in {"HIDDEN": 256, "INTER": 512, "LAYERS": 2, "HEADS": 4,
                        "KV_HEADS": 2, "VOCAB": 512}.items():  # fmt: skip
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(module, "flash", reference_flash)
    return module


def test_the_flash_check_tells_the_two_causal_alignments_apart(ts) -> None:
    got = ts.check_flash(torch.device("cpu"))
    assert got["bottom_right_err"] < 0.02  # bf16 rounding
    assert got["top_left_err"] > 0.1


def test_each_request_writes_its_new_keys_at_the_end_of_its_own_key_range(ts) -> None:
    b = ts.inputs(SHAPE, torch.device("cpu"))
    assert b["cu_q"].tolist() == [0, 5, 9, 10, 11]
    assert b["cu_k"].tolist() == [0, 8, 12, 19, 21]  # 3 + 5, 0 + 4, 7, 2
    assert b["slots"].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11, 18, 20]
    assert b["last"].tolist() == [4, 8, 9, 10]  # each request's last query token
    assert (b["max_q"], b["max_k"], b["total_k"]) == (5, 8, 21)
    assert b["ids"].shape == (11,) and b["cos"].shape == (11, 1, ts.HEAD_DIM)
    # positions: the prefills' chunk positions, then each decode's context - 1
    pos = [3, 4, 5, 6, 7, 0, 1, 2, 3, 6, 1]
    inv = 500000.0 ** (-torch.arange(0, 64, dtype=torch.float32) / 64)
    want = (torch.tensor(pos, dtype=torch.float32)[:, None] * inv).cos().to(ts.DT)
    assert torch.equal(b["cos"][:, 0, :64], want)


def test_a_step_writes_only_its_slots_and_picks_one_token_per_request(ts) -> None:
    dev = torch.device("cpu")
    model = ts.Model(dev, kv_tokens=32)
    before = [(L["k"].clone(), L["v"].clone()) for L in model.layers]
    b = ts.inputs(SHAPE, dev)
    with torch.no_grad():
        picked = model.forward(b)
    assert picked.shape == (4,) and bool(((picked >= 0) & (picked < ts.VOCAB)).all())
    written = torch.zeros(32, dtype=torch.bool)
    written[b["slots"]] = True
    for L, (k0, v0) in zip(model.layers, before, strict=True):
        assert torch.equal(L["k"][~written], k0[~written])
        assert torch.equal(L["v"][~written], v0[~written])
        assert not torch.equal(L["k"][written], k0[written])
