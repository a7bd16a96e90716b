"""Builds a tiny offline Llama model (random weights, byte-level BPE tokenizer) that real vLLM on CPU can load."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# A chat template so /v1/chat/completions works against the tiny model (plain text, no special roles).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
VERSION = "tiny-llama-v1"  # bump when the recipe changes, so cached copies are rebuilt


def _corpus() -> list[str]:
    words = (
        "the worker runs a batch of requests through a tiny model memory pressure guard lease gpu ram swap "
        "kernel oom killer priority queue production test bulk pause resume throttle free wake engine token"
    ).split()
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) + f" {i} .")
    return lines


def _build_tokenizer(dest: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    return len(fast)


def _build_model(dest: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, torch_dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)


def build_tiny_model(dest: Path) -> Path:
    """Build the model under `dest` (once: an existing complete copy is reused) and return its directory."""
    dest = Path(dest)
    marker = dest / "headroom-tiny-model.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == VERSION:
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _build_model(tmp, _build_tokenizer(tmp))
    (tmp / "headroom-tiny-model.json").write_text(json.dumps({"version": VERSION}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/headroom-tiny-model")))
