"""What an uploaded Hugging Face-layout model directory must hold, and what its files say.

Pure checks over a directory that a caller can read (`ModelDirectory`): config.json, the
tokenizer files, the architecture against what this install of transformers can build,
and each safetensors shard's header against its size; or, for a directory holding a GGUF
file, that one file, which carries its own configuration and tokenizer. Every problem
found is reported, each saying what to fix; nothing stops at the first."""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from modelserver.gguf_header import NotGguf, read_header

CONFIG = "config.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Vocabulary files that, with tokenizer_config.json, make a slow or fast tokenizer.
VOCAB_FILES = ("vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
SHARD_INDEX = "model.safetensors.index.json"
# A safetensors header is JSON of a few hundred bytes per tensor; past this it is not one.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# What a replica needs beyond the weights (cache and activations), as a share of them.
MEMORY_OVERHEAD = 1.25
GIB = 1024**3

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_LICENSE_LINE = re.compile(r"^license:\s*['\"]?([A-Za-z0-9._+-]{1,100})['\"]?\s*$", re.MULTILINE)


class ModelDirectory(Protocol):
    """The files of one uploaded directory: their sizes by relative path, and a reader."""

    sizes: Mapping[str, int]

    def open(self, path: str) -> IO[bytes]: ...


@dataclass
class Inspection:
    """What the files say, and every problem with them."""

    problems: list[str] = field(default_factory=list)
    task: str = ""
    architecture: str = ""
    context_length: int | None = None
    embedding_dimensions: int | None = None
    weights_bytes: int = 0
    license: str = ""
    gguf: bool = False  # the weights are one GGUF file (dequantized into float32 to serve)

    @property
    def memory_gb(self) -> int:
        return max(1, math.ceil(self.weights_bytes * MEMORY_OVERHEAD / GIB))


def inspect(directory: ModelDirectory, *, task: str = "") -> Inspection:
    """Checks the directory; `task` ("chat" or "embedding") overrides what config.json implies."""
    if any(path.endswith(GGUF_SUFFIX) for path in directory.sizes):
        return _inspect_gguf(directory, task=task)
    result = Inspection()
    config = _read_config(directory, result)
    _check_tokenizer(directory, result)
    if config is not None:
        _check_architecture(config, result, task=task)
    _check_shards(directory, result)
    result.license = _readme_license(directory)
    return result


def _read_json(directory: ModelDirectory, path: str) -> Any:
    with directory.open(path) as handle:
        return json.loads(handle.read())


def _read_config(directory: ModelDirectory, result: Inspection) -> dict[str, Any] | None:
    if CONFIG not in directory.sizes:
        result.problems.append(f"{CONFIG} is missing: upload the model's {CONFIG} (transformers writes it with save_pretrained).")
        return None
    try:
        config = _read_json(directory, CONFIG)
    except (ValueError, UnicodeDecodeError) as error:
        result.problems.append(f"{CONFIG} is not valid JSON ({error}): upload the file save_pretrained wrote.")
        return None
    if not isinstance(config, dict):
        result.problems.append(f"{CONFIG} must be a JSON object: upload the file save_pretrained wrote.")
        return None
    return config


def _check_tokenizer(directory: ModelDirectory, result: Inspection) -> None:
    if TOKENIZER_JSON in directory.sizes:
        return
    if TOKENIZER_CONFIG in directory.sizes and any(name in directory.sizes for name in VOCAB_FILES):
        return
    result.problems.append(
        f"The tokenizer is missing: upload {TOKENIZER_JSON}, or {TOKENIZER_CONFIG} with a vocabulary "
        f"({', '.join(VOCAB_FILES)}); tokenizer.save_pretrained writes them."
    )


@functools.cache
def _buildable() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Model types this install of transformers knows, those AutoModelForCausalLM can build
    and those AutoModel can build. Imported on first use, not with the module: transformers
    loads torch (seconds, hundreds of MB), which the web processes need only here."""
    auto = importlib.import_module("transformers.models.auto.modeling_auto")
    configs = importlib.import_module("transformers.models.auto.configuration_auto")
    return (
        frozenset(configs.CONFIG_MAPPING_NAMES),
        frozenset(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        frozenset(auto.MODEL_MAPPING_NAMES),
    )


def _check_architecture(config: dict[str, Any], result: Inspection, *, task: str) -> None:
    architectures = config.get("architectures")
    model_type = config.get("model_type")
    if not isinstance(architectures, list) or not architectures or not all(isinstance(name, str) for name in architectures):
        result.problems.append(f'{CONFIG} has no "architectures" list: save the model with save_pretrained, which writes it.')
        return
    if not isinstance(model_type, str):
        result.problems.append(f'{CONFIG} has no "model_type": save the model with save_pretrained, which writes it.')
        return
    result.architecture = architectures[0]
    result.task = task or ("chat" if result.architecture.endswith("ForCausalLM") else "embedding")
    known, causal, base = _buildable()
    if model_type not in known:
        result.problems.append(
            f"Model type {model_type!r} ({result.architecture}) is unknown to the runtime's transformers: "
            "upload a model of an architecture transformers supports."
        )
    elif result.task == "chat" and model_type not in causal:
        result.problems.append(
            f"The runtime cannot load {result.architecture} ({model_type}) for chat: AutoModelForCausalLM has no class for it. "
            "Upload a causal language model, or register it as an embedding model."
        )
    elif result.task == "embedding" and model_type not in base:
        result.problems.append(
            f"The runtime cannot load {result.architecture} ({model_type}) for embeddings: AutoModel has no class for it."
        )
    context = config.get("max_position_embeddings")
    if isinstance(context, int) and not isinstance(context, bool) and context > 0:
        result.context_length = context
    hidden = config.get("hidden_size")
    if result.task == "embedding" and isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0:
        result.embedding_dimensions = hidden


def _check_shards(directory: ModelDirectory, result: Inspection) -> None:
    shards = sorted(path for path in directory.sizes if path.endswith(".safetensors"))
    if not shards:
        result.problems.append("No weights: upload the model's .safetensors file(s) (save_pretrained writes them).")
        return
    for shard in shards:
        problem = _shard_problem(directory, shard)
        if problem:
            result.problems.append(problem)
        else:
            result.weights_bytes += directory.sizes[shard]
    if SHARD_INDEX in directory.sizes:
        _check_index(directory, result)


def _shard_problem(directory: ModelDirectory, path: str) -> str | None:
    """The safetensors layout: an 8-byte little-endian header length, a JSON header naming
    each tensor's dtype, shape and byte range, then the tensor data, exactly as long as the
    ranges say. Parsed here rather than with safe_open, which needs the whole file on a
    local disk: this reads only the header, from any storage backend."""
    size = directory.sizes[path]
    redo = f"upload {path} again (a new upload) from the file save_pretrained wrote."
    if size < 8:
        return f"{path} is truncated ({size} bytes, shorter than a safetensors header): {redo}"
    with directory.open(path) as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            return f"{path} is corrupt or truncated: its header claims {length} bytes, the file has {size}: {redo}"
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            return f"{path} is corrupt: its header is not valid JSON: {redo}"
    if not isinstance(header, dict):
        return f"{path} is corrupt: its header is not a JSON object: {redo}"
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        expected = _tensor_bytes(tensor)
        if expected is None:
            return f"{path} is corrupt: tensor {name!r} has an unreadable entry in the header: {redo}"
        start, stop = tensor["data_offsets"]
        if stop - start != expected:
            return f"{path} is corrupt: tensor {name!r} spans {stop - start} bytes, its shape and dtype need {expected}: {redo}"
        end = max(end, stop)
    data = size - 8 - length
    if data != end:
        return f"{path} is truncated or corrupt: its header describes {end} bytes of tensor data, the file holds {data}: {redo}"
    return None


def _tensor_bytes(tensor: Any) -> int | None:
    if not isinstance(tensor, dict):
        return None
    dtype, shape, offsets = tensor.get("dtype"), tensor.get("shape"), tensor.get("data_offsets")
    if dtype not in _DTYPE_BYTES or not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
        return None
    if not all(isinstance(n, int) and n >= 0 for n in [*shape, *offsets]) or offsets[0] > offsets[1]:
        return None
    return math.prod(shape) * _DTYPE_BYTES[dtype]


def _check_index(directory: ModelDirectory, result: Inspection) -> None:
    try:
        index = _read_json(directory, SHARD_INDEX)
        shards = set(index["weight_map"].values())
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        result.problems.append(f"{SHARD_INDEX} is not a valid shard index: upload the file save_pretrained wrote.")
        return
    missing = sorted(str(shard) for shard in shards if shard not in directory.sizes)
    if missing:
        result.problems.append(f"{SHARD_INDEX} names shard(s) that were not uploaded: {', '.join(missing)}. Upload every shard.")


def _readme_license(directory: ModelDirectory) -> str:
    """The `license:` of a Hugging Face model card's front matter, if there is one."""
    if "README.md" not in directory.sizes or directory.sizes["README.md"] > 1024 * 1024:
        return ""
    with directory.open("README.md") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return ""
    front = text[3:].split("\n---", 1)[0]
    match = _LICENSE_LINE.search(front)
    return match.group(1) if match else ""


GGUF_SUFFIX = ".gguf"
FLOAT32_BYTES = 4


@functools.cache
def _gguf_architectures() -> frozenset[str]:
    """The GGUF architectures this install of transformers can dequantize into a model."""
    ggml = importlib.import_module("transformers.integrations.ggml")
    return frozenset(ggml.GGUF_CONFIG_MAPPING) - {"general", "tokenizer", "tokenizer_config"}


def _inspect_gguf(directory: ModelDirectory, *, task: str) -> Inspection:
    """A GGUF model: one .gguf file, with its architecture, context length and licence read
    from its header and its tensors checked against the file's size. The runtime loads it
    with transformers, which dequantizes it, so it is served as a chat model."""
    result = Inspection(gguf=True, task=task or "chat")
    files = sorted(path for path in directory.sizes if path.endswith(GGUF_SUFFIX))
    others = sorted(path for path in directory.sizes if path.endswith(".safetensors"))
    if len(files) > 1:
        result.problems.append(f"Upload one .gguf file per model; this one has {len(files)} ({', '.join(files)}).")
    if others:
        result.problems.append("Upload either safetensors weights or one .gguf file, not both.")
    if result.task != "chat":
        result.problems.append("A GGUF model is served for chat only: register it with the task chat, or upload safetensors.")
    path = files[0]
    size = directory.sizes[path]
    redo = f"upload {path} again (a new upload) from the original file."
    try:
        with directory.open(path) as handle:
            header = read_header(handle)
    except NotGguf as error:
        result.problems.append(f"{path} is not a readable GGUF file ({error}): {redo}")
        return result
    if header.data_start + header.data_bytes != size:
        result.problems.append(
            f"{path} is truncated or corrupt: its header describes {header.data_start + header.data_bytes} bytes, "
            f"the file has {size}: {redo}"
        )
    architecture = header.get("general.architecture")
    if not isinstance(architecture, str):
        result.problems.append(f"{path} names no general.architecture: export it again with a current GGUF converter.")
        return result
    result.architecture = architecture
    if architecture not in _gguf_architectures():
        result.problems.append(
            f"The runtime cannot load GGUF architecture {architecture!r}: it dequantizes "
            f"{', '.join(sorted(_gguf_architectures()))}. Upload one of those, or the model's safetensors."
        )
    context = header.get(f"{architecture}.context_length")
    if isinstance(context, int) and context > 0:
        result.context_length = context
    licence = header.get("general.license")
    result.license = licence[:100] if isinstance(licence, str) else ""
    result.weights_bytes = header.parameters * FLOAT32_BYTES  # as served: dequantized into float32
    return result
