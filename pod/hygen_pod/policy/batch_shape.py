"""The shape of one engine iteration: what the latency predictor sees.

Kept free of vLLM types so that the predictor, the scheduler policy and the
simulator share one description of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BatchShape:
    """Aggregate work of one iteration.

    A prefill item is a chunk of ``c`` prompt tokens computed on top of ``p``
    tokens already in the KV cache; a decode item is one token generated with
    ``ctx`` tokens of context.
    """

    prefill_tokens: int = 0  # S_p: sum of prefill chunk lengths
    prefill_sq: int = 0  # sum of (p + c)^2 - p^2: attention work of the chunks
    num_prefills: int = 0  # N_p
    num_decodes: int = 0  # N_d
    decode_context: int = 0  # S_d: sum of decode context lengths
    decode_context_sq: int = 0  # sum of ctx^2 (candidate feature only)

    def add_prefill(self, chunk: int, computed: int = 0) -> None:
        """Add a prefill chunk of ``chunk`` tokens after ``computed`` cached ones."""
        self.prefill_tokens += chunk
        self.prefill_sq += (computed + chunk) ** 2 - computed**2
        self.num_prefills += 1

    def add_decode(self, context: int) -> None:
        """Add one decode token whose attention reads ``context`` tokens."""
        self.num_decodes += 1
        self.decode_context += context
        self.decode_context_sq += context * context

    def add_decodes(self, count: int, context: int, context_sq: int) -> None:
        """Add ``count`` decodes at once, given the sums of their contexts and squares (a
        hot loop sums them inline rather than calling `add_decode` per request)."""
        self.num_decodes += count
        self.decode_context += context
        self.decode_context_sq += context_sq

    def add(self, num_tokens: int, computed: int, num_prompt_tokens: int) -> None:
        """Add a vLLM-style scheduled item: ``num_tokens`` new tokens after ``computed``.

        An item is a decode when the request is past its prompt and computes one token.
        """
        if num_tokens == 1 and computed >= num_prompt_tokens:
            self.add_decode(computed + 1)
        else:
            self.add_prefill(num_tokens, computed)

    def copy(self) -> BatchShape:
        return BatchShape(
            self.prefill_tokens,
            self.prefill_sq,
            self.num_prefills,
            self.num_decodes,
            self.decode_context,
            self.decode_context_sq,
        )

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.num_decodes

    @property
    def empty(self) -> bool:
        return self.prefill_tokens == 0 and self.num_decodes == 0

    def as_dict(self) -> dict[str, int]:
        return {
            "prefill_tokens": self.prefill_tokens,
            "prefill_sq": self.prefill_sq,
            "num_prefills": self.num_prefills,
            "num_decodes": self.num_decodes,
            "decode_context": self.decode_context,
            "decode_context_sq": self.decode_context_sq,
        }


@dataclass(slots=True)
class StepSample:
    """One measured iteration: its shape and wall time in seconds."""

    shape: BatchShape
    seconds: float
