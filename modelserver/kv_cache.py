"""The running batch's key/value cache: one row per sequence, left-padded to a common
length, with a mask that marks which positions are real.

Sequences join between decode steps (their prompt cache is padded and stacked onto the
batch) and leave when they finish (their row is dropped); columns that have become
padding in every row are trimmed, so the batch never pays for sequences that left.
Each sequence's prompt is computed once, at prefill; a decode step feeds one token a row.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _filled(layer: object) -> tuple[DynamicLayer, torch.Tensor, torch.Tensor]:
    """A layer of the decoder-only models served here (full attention) with its keys and
    values, which the prefill has filled."""
    if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
        raise TypeError(f"expected a filled DynamicLayer, got {type(layer).__name__}")
    return layer, layer.keys, layer.values


class BatchCache:
    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, length], 1 = real token

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def append(self, other_cache: DynamicCache, other_mask: torch.Tensor) -> None:
        """Stacks freshly prefilled sequences under the running ones."""
        if self.cache is None or self.mask is None:
            self.cache, self.mask = other_cache, other_mask
            return
        length = max(self.length, other_mask.shape[1])
        merged = DynamicCache(config=self.config)
        for index, layers in enumerate(zip(self.cache.layers, other_cache.layers, strict=True)):
            (_, my_keys, my_values), (_, their_keys, their_values) = _filled(layers[0]), _filled(layers[1])
            keys = torch.cat([_pad_left(my_keys, length, 2), _pad_left(their_keys, length, 2)], dim=0)
            values = torch.cat([_pad_left(my_values, length, 2), _pad_left(their_values, length, 2)], dim=0)
            merged.update(keys, values, index)
        self.mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(other_mask, length, 1)], dim=0)
        self.cache = merged

    def extend_mask(self) -> torch.Tensor:
        """The mask for a decode step: every row gains one real position."""
        assert self.mask is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        return self.mask

    def keep(self, rows: list[int]) -> None:
        """Drops every row not listed, then trims columns that are padding in all rows."""
        if self.cache is None or self.mask is None:
            return
        if not rows:
            self.cache = self.mask = None
            return
        if len(rows) != self.rows:
            index = torch.tensor(rows, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask.index_select(0, index)
        real_columns = self.mask.any(dim=0).nonzero()
        start = int(real_columns[0]) if real_columns.numel() else self.length
        if start > 0:
            for layer, keys, values in map(_filled, self.cache.layers):
                layer.keys = keys[:, :, start:, :]
                layer.values = values[:, :, start:, :]
            self.mask = self.mask[:, start:]
