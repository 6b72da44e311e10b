"""Build a tiny random-weight Llama and a locally trained tokenizer in a folder.

Tests and the local demo need a real model that vLLM can load without
downloading anything. The weights are written with safetensors' numpy API and the
tokenizer is a byte-level BPE trained on generated text, so this module needs
neither torch nor network access. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up "
    "use your how said an each she which do their time if will way about many then them "
    "write would like so these her long make thing see him two has look more day could "
    "go come did number sound no most people my over know water than call first who may "
    "down side been now find any new work part take get place made live where after back "
    "little only round man year came show every good me give our under name very through "
    "just form sentence great think say help low line differ turn cause much mean before "
    "move right boy old too same tell does set three want air well also play small end "
    "put home read hand port large spell add even land here must big high such follow "
    "act why ask men change went light kind "
)
WORDS = tuple(_TEXT.split())

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus(rng: random.Random, lines: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(lines)]


def build_tokenizer(out: Path, vocab_size: int = 1024, seed: int = 0) -> None:
    """Train a byte-level BPE tokenizer and write tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(random.Random(seed), 4000), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": 4096,
                "clean_up_tokenization_spaces": False,
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


def build_tiny_llama(
    out: str | Path,
    *,
    hidden_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 512,
    vocab_size: int = 1024,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Write a loadable Llama checkpoint (config, safetensors, tokenizer) into ``out``."""
    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out, vocab_size=vocab_size, seed=seed)
    # The trained vocabulary may be a little smaller than asked; size the model to it.
    vocab = len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])
    head_dim = hidden_size // num_heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    rng = np.random.default_rng(seed)

    def w(*shape: int, std: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": w(vocab, hidden_size, std=1.0),
        "model.norm.weight": np.ones(hidden_size, dtype=np.float32),
        "lm_head.weight": w(vocab, hidden_size, std=0.5),
    }
    kv = num_kv_heads * head_dim
    for i in range(num_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(hidden_size, hidden_size),
            p + "self_attn.k_proj.weight": w(kv, hidden_size),
            p + "self_attn.v_proj.weight": w(kv, hidden_size),
            p + "self_attn.o_proj.weight": w(hidden_size, hidden_size),
            p + "mlp.gate_proj.weight": w(intermediate_size, hidden_size),
            p + "mlp.up_proj.weight": w(intermediate_size, hidden_size),
            p + "mlp.down_proj.weight": w(hidden_size, intermediate_size),
            p + "input_layernorm.weight": np.ones(hidden_size, dtype=np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden_size, dtype=np.float32),
        }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
