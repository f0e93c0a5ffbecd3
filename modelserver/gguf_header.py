"""What a GGUF file's header says, read as a stream from any storage backend (the gguf
package's reader needs the whole file memory-mapped from a local disk).

The layout (version 2 and 3, little-endian): the magic "GGUF", the version, the number of
tensors and of metadata pairs; each pair as a string key, a value type and a value; each
tensor as its name, dimensions, quantization type and data offset; then, aligned, the
tensor data. The sizes come from the gguf package's quantization table, so a truncated or
corrupt file is found from its header and its size alone."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import IO, Any

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

# Past these a header is not one a model would have (SmolLM2's vocabulary is 49,152 tokens).
MAX_STRING = 16 * 1024 * 1024
MAX_ARRAY = 4 * 1024 * 1024
MAX_ITEMS = 1_000_000
# The whole header (Llama 3's 128k-token vocabulary and merges take about 10 MB), and how
# deep arrays may nest: a hostile file could otherwise keep a check busy for hours or
# recurse without end.
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_NESTING = 2

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class NotGguf(ValueError):
    """The bytes are not a GGUF header this reader understands; the message says why."""


@dataclass
class GgufHeader:
    metadata: dict[str, Any] = field(default_factory=dict)  # arrays are kept by length only
    parameters: int = 0  # elements over every tensor
    data_bytes: int = 0  # where the last tensor's data ends, from the start of the data
    data_start: int = 0  # the aligned offset of the tensor data in the file

    def get(self, key: str) -> Any:
        return self.metadata.get(key)


class _Reader:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.position = 0

    def take(self, count: int) -> bytes:
        if self.position + count > MAX_HEADER_BYTES:
            raise NotGguf(f"its header runs past {MAX_HEADER_BYTES // (1024 * 1024)} MiB")
        data = self.handle.read(count)
        if len(data) != count:
            raise NotGguf("the file ends inside its header")
        self.position += count
        return data

    def scalar(self, layout: str) -> Any:
        return struct.unpack(layout, self.take(struct.calcsize(layout)))[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > MAX_STRING:
            raise NotGguf(f"a string in the header claims {length} bytes")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item_kind, count = self.scalar("<I"), self.scalar("<Q")
            if count > MAX_ARRAY:
                raise NotGguf(f"an array in the header claims {count} items")
            if depth >= MAX_NESTING:
                raise NotGguf(f"arrays in the header nest deeper than {MAX_NESTING}")
            for _ in range(count):
                self.value(item_kind, depth + 1)
            return count
        try:
            return self.scalar(_SCALARS[GGUFValueType(kind)])
        except (ValueError, KeyError):
            raise NotGguf(f"unknown metadata value type {kind}") from None


def read_header(handle: IO[bytes]) -> GgufHeader:
    """The metadata and the tensor data's extent; raises NotGguf saying what is wrong."""
    reader = _Reader(handle)
    try:
        magic, version = struct.unpack("<II", reader.take(8))
    except NotGguf:
        raise NotGguf("it is shorter than a GGUF header") from None
    if magic != GGUF_MAGIC:
        raise NotGguf("it does not start with the GGUF magic bytes")
    if version not in (2, 3):
        raise NotGguf(f"GGUF version {version} is not supported (2 and 3 are)")
    tensors, pairs = reader.scalar("<Q"), reader.scalar("<Q")
    if tensors > MAX_ITEMS or pairs > MAX_ITEMS:
        raise NotGguf(f"the header claims {tensors} tensors and {pairs} metadata entries")
    header = GgufHeader()
    for _ in range(pairs):
        key = reader.string()
        header.metadata[key] = reader.value(reader.scalar("<I"))
    for _ in range(tensors):
        name = reader.string()
        dimensions = reader.scalar("<I")
        if dimensions > 8:
            raise NotGguf(f"tensor {name!r} claims {dimensions} dimensions")
        shape = [reader.scalar("<Q") for _ in range(dimensions)]
        kind, offset = reader.scalar("<I"), reader.scalar("<Q")
        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise NotGguf(f"tensor {name!r} has an unknown quantization type {kind}") from None
        elements = math.prod(shape)
        if elements % block:
            raise NotGguf(f"tensor {name!r} has {elements} elements, not whole blocks of {block}")
        header.parameters += elements
        header.data_bytes = max(header.data_bytes, offset + elements // block * block_bytes)
    alignment = header.get("general.alignment")
    alignment = alignment if isinstance(alignment, int) and alignment > 0 else GGUF_DEFAULT_ALIGNMENT
    header.data_start = -(-reader.position // alignment) * alignment
    return header
