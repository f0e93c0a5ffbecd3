"""Continuous (iteration-level) batching for text generation.

One engine thread owns the model. Between decode steps it admits waiting requests
(prefilled together, then stacked onto the running batch's cache) and drops sequences
that finished, were cancelled or whose client went away; every step then advances all
running sequences by one token. Tokens are handed to each request's asyncio queue as
they are produced, so streaming clients see them at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from modelserver.errors import EngineUnavailable, QueueFull
from modelserver.kv_cache import BatchCache
from modelserver.loading import LoadedModel
from modelserver.metrics import ServingMetrics

log = logging.getLogger(__name__)
GREEDY_BELOW = 1e-4  # temperatures under this sample greedily


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = TextDelta | Finished | Failed


@dataclass(eq=False)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def cancel(self) -> None:
        # Read by the engine thread between steps; a plain attribute write is atomic.
        self.cancelled = True


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    emitted_chars: int = 0
    first_token_at: float | None = None

    @property
    def next_position(self) -> int:
        # The position of the token fed in the coming decode step (the last sampled one).
        return len(self.request.prompt_ids) + len(self.generated) - 1


class ContinuousBatchingEngine:
    def __init__(self, loaded: LoadedModel, metrics: ServingMetrics, *, max_batch_size: int = 16, max_queue: int = 64) -> None:
        self.loaded = loaded
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.broken: str | None = None
        self._waiting: deque[GenerationRequest] = deque()
        self._running: list[_Sequence] = []
        self._cache = BatchCache(loaded.model.config)
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tokenizer = loaded.tokenizer

    # --- called from the event loop ---------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="generation-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> None:
        with self._wakeup:  # checked under the lock the failure handler takes to fail the queue
            if self.broken is not None or self._stopping:
                raise EngineUnavailable(self.broken or "the engine is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(request)
            self.metrics.requests_waiting.set(len(self._waiting))
            self._wakeup.notify()

    # --- the engine thread --------------------------------------------------------------

    def _run(self) -> None:
        joiners: list[GenerationRequest] | None = []
        try:
            with torch.inference_mode():
                while True:
                    joiners = self._take_joiners()
                    if joiners is None:
                        return
                    self._drop_cancelled()
                    if joiners:
                        self._prefill(joiners)
                    joiners = []
                    if self._running:
                        self._decode_step()
        except Exception as error:  # the engine is broken: say so, fail everyone, stop
            log.exception("generation engine failed")
            with self._wakeup:
                self.broken = f"generation engine failed: {type(error).__name__}: {error}"
            failed = {id(sequence.request): sequence.request for sequence in self._running}
            failed.update({id(request): request for request in joiners or []})
            for request in failed.values():
                self._emit(request, Failed(self.broken))
            with self._wakeup:
                for request in self._waiting:
                    self._emit(request, Failed(self.broken))
                self._waiting.clear()
            self._running.clear()
            self.metrics.busy.set_in_flight(0)

    def _take_joiners(self) -> list[GenerationRequest] | None:
        with self._wakeup:
            if not self._waiting and not self._running:
                self.metrics.busy.set_in_flight(0)  # idle until the next request
            while not self._waiting and not self._running and not self._stopping:
                self._wakeup.wait(timeout=1.0)
            if self._stopping and not self._running and not self._waiting:
                return None
            joiners: list[GenerationRequest] = []
            while self._waiting and len(self._running) + len(joiners) < self.max_batch_size:
                request = self._waiting.popleft()
                if not request.cancelled:
                    joiners.append(request)
            self.metrics.requests_waiting.set(len(self._waiting))
            self.metrics.busy.set_in_flight(len(self._running) + len(joiners))
        now = time.monotonic()
        for request in joiners:
            self.metrics.queue_time.observe(now - request.arrival)
        return joiners

    def _drop_cancelled(self) -> None:
        keep = [index for index, sequence in enumerate(self._running) if not sequence.request.cancelled]
        if len(keep) != len(self._running):
            self._running = [self._running[index] for index in keep]
            self._cache.keep(keep)
            self.metrics.requests_running.set(len(self._running))

    def _generator_for(self, params: SamplingParams) -> torch.Generator | None:
        if params.temperature < GREEDY_BELOW:
            return None
        generator = torch.Generator(device=self.loaded.device)
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        return generator

    def _prefill(self, joiners: list[GenerationRequest]) -> None:
        device = self.loaded.device
        length = max(len(request.prompt_ids) for request in joiners)
        pad = self._tokenizer.pad_token_id
        input_ids = torch.full((len(joiners), length), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(joiners), length), dtype=torch.long, device=device)
        for row, request in enumerate(joiners):
            ids = request.prompt_ids
            input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=device)
            mask[row, length - len(ids) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.loaded.model.config)
        output = self.loaded.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        sequences = [_Sequence(request=request, generator=self._generator_for(request.params)) for request in joiners]
        self.metrics.prompt_tokens.inc(sum(len(request.prompt_ids) for request in joiners))
        self._cache.append(output.past_key_values, mask)
        self._running.extend(sequences)
        self.metrics.requests_running.set(len(self._running))
        self._advance(sequences, output.logits[:, -1, :], first_row=len(self._running) - len(sequences))

    def _decode_step(self) -> None:
        device = self.loaded.device
        input_ids = torch.tensor([[sequence.generated[-1]] for sequence in self._running], dtype=torch.long, device=device)
        positions = torch.tensor([[sequence.next_position] for sequence in self._running], dtype=torch.long, device=device)
        cache_position = torch.tensor([self._cache.length], dtype=torch.long, device=device)
        mask = self._cache.extend_mask()
        self.metrics.batch_size.observe(len(self._running))
        output = self.loaded.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._cache.cache,
            cache_position=cache_position,
            use_cache=True,
        )
        self._cache.cache = output.past_key_values
        self._advance(list(self._running), output.logits[:, -1, :], first_row=0)

    def _sample(self, sequences: list[_Sequence], logits: torch.Tensor) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for row, sequence in enumerate(sequences):
            params = sequence.request.params
            if params.temperature < GREEDY_BELOW:
                continue  # so small a temperature is greedy, and dividing by it would overflow
            scaled = logits[row].double() / params.temperature
            probs = torch.softmax(scaled - scaled.max(), dim=-1)
            if params.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
                sorted_probs = sorted_probs.masked_fill(outside, 0.0)
                probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
            if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
                continue  # keep the greedy token rather than fail the batch
            tokens[row] = int(torch.multinomial(probs, 1, generator=sequence.generator))
        return tokens

    def _advance(self, sequences: list[_Sequence], logits: torch.Tensor, first_row: int) -> None:
        now = time.monotonic()
        tokens = self._sample(sequences, logits)
        finished_rows: set[int] = set()
        for offset, (sequence, token) in enumerate(zip(sequences, tokens, strict=True)):
            sequence.generated.append(token)
            if sequence.first_token_at is None:
                sequence.first_token_at = now
                self.metrics.time_to_first_token.observe(now - sequence.request.arrival)
            if self._after_token(sequence, token):
                finished_rows.add(first_row + offset)
        self.metrics.generation_tokens.inc(len(tokens))
        if finished_rows:
            keep = [row for row in range(len(self._running)) if row not in finished_rows]
            self._running = [self._running[row] for row in keep]
            self._cache.keep(keep)
            self.metrics.requests_running.set(len(self._running))

    def _after_token(self, sequence: _Sequence, token: int) -> bool:
        """Emits new text; returns True when the sequence is done."""
        request, params = sequence.request, sequence.request.params
        hit_eos = token in self.loaded.eos_token_ids
        ids = sequence.generated[:-1] if hit_eos else sequence.generated
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        reason: str | None = "stop" if hit_eos else None
        for stop in params.stop:
            found = text.find(stop, max(0, sequence.emitted_chars - len(stop)))
            if found != -1:
                text, reason = text[:found], "stop"
        if reason is None and len(sequence.generated) >= params.max_tokens:
            reason = "length"
        if reason is None and len(request.prompt_ids) + len(sequence.generated) >= self.loaded.spec.max_context:
            reason = "length"
        if reason is None:
            # Hold back a possible start of a stop string, and half-decoded characters.
            holdback = max((len(stop) - 1 for stop in params.stop), default=0)
            safe = len(text) - holdback
            while safe > sequence.emitted_chars and text[safe - 1] == "\ufffd":
                safe -= 1
            if safe > sequence.emitted_chars:
                self._emit(request, TextDelta(text[sequence.emitted_chars : safe]))
                sequence.emitted_chars = safe
            return False
        if len(text) > sequence.emitted_chars:
            self._emit(request, TextDelta(text[sequence.emitted_chars :]))
        self._emit(request, Finished(reason=reason, prompt_tokens=len(request.prompt_ids), completion_tokens=len(sequence.generated)))
        self.metrics.success(reason)
        self.metrics.e2e_latency.observe(time.monotonic() - request.arrival)
        return True

    @staticmethod
    def _emit(request: GenerationRequest, event: Event) -> None:
        put: Callable[[Any], None] = request.events.put_nowait
        request.loop.call_soon_threadsafe(put, event)
