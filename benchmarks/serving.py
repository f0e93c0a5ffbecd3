"""`manage.py bench serving`: the model server against its limits, measured side by side.

- Embeddings: 64 concurrent HTTP clients, one text per request, against the raw batched
  forward pass in this process (the limit) and against the same server with batching off.
- Chat: 16 concurrent streaming clients against 1 client, and against a static
  `generate()` batch of 16 in this process (the limit); time to first token p50/p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import torch
from django.conf import settings

from benchmarks.loadgen import LoadResult, run_load
from modelserver import loading
from modelserver.catalog import get_spec
from modelserver.embedding import embed_token_ids
from modelserver.processes import model_server

EMBEDDING_MODEL = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"
EMBED_CLIENTS = 64
EMBED_BATCH = 32  # per forward pass; the server runs two passes at once on two cores
EMBED_PARALLEL = 2
CHAT_CLIENTS = 16
CHAT_TOKENS = 64

_SUBJECTS = [
    "a lighthouse keeper",
    "a city at night",
    "the first snow",
    "an old library",
    "a desert train",
    "a mountain village",
    "a lost robot",
    "the deep sea",
]
_ACTIONS = [
    "discovers a secret",
    "waits for a letter",
    "learns to paint",
    "builds a bridge",
    "hears a strange song",
    "plants a garden",
    "opens a shop",
    "crosses a river",
]


def sentences(count: int) -> list[str]:
    return [f"Story {index}: {_SUBJECTS[index % 8]} {_ACTIONS[(index // 8) % 8]} on day {index}." for index in range(count)]


def chat_prompts(count: int) -> list[str]:
    return [f"Write a long, detailed story about {_SUBJECTS[index % 8]} who {_ACTIONS[(index * 3) % 8]}." for index in range(count)]


@dataclass
class ServingFigures:
    embeddings_raw_per_s: float
    embeddings_plain_forward_per_s: float
    embeddings_served_per_s: float
    embeddings_unbatched_per_s: float
    chat_single_tokens_per_s: float
    chat_concurrent_tokens_per_s: float
    chat_static_tokens_per_s: float
    chat_ttft_p50_ms: float
    chat_ttft_p99_ms: float

    def as_json(self) -> dict[str, Any]:
        return {
            "embeddings_vs_raw": round(self.embeddings_served_per_s / self.embeddings_raw_per_s, 3),
            "embeddings_vs_unbatched": round(self.embeddings_served_per_s / self.embeddings_unbatched_per_s, 3),
            "chat_vs_single": round(self.chat_concurrent_tokens_per_s / self.chat_single_tokens_per_s, 3),
            "chat_vs_static_batch": round(self.chat_concurrent_tokens_per_s / self.chat_static_tokens_per_s, 3),
            "chat_ttft_p50_ms": round(self.chat_ttft_p50_ms, 1),
            "chat_ttft_p99_ms": round(self.chat_ttft_p99_ms, 1),
            "embeddings_vs_plain_forward": round(self.embeddings_served_per_s / self.embeddings_plain_forward_per_s, 3),
            "embeddings_raw_texts_per_s": round(self.embeddings_raw_per_s, 1),
            "embeddings_plain_forward_texts_per_s": round(self.embeddings_plain_forward_per_s, 1),
            "embeddings_served_texts_per_s": round(self.embeddings_served_per_s, 1),
            "embeddings_unbatched_texts_per_s": round(self.embeddings_unbatched_per_s, 1),
            "chat_single_tokens_per_s": round(self.chat_single_tokens_per_s, 1),
            "chat_concurrent_tokens_per_s": round(self.chat_concurrent_tokens_per_s, 1),
            "chat_static_batch_tokens_per_s": round(self.chat_static_tokens_per_s, 1),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def raw_embedding_rate(texts: list[str], seconds: float, batch_size: int, parallel: int = 1) -> float:
    """Texts/s of the bare forward pass on pre-tokenized batches: `parallel` passes at a
    time, the cores shared out between them (1: one pass on every core)."""
    loaded = loading.load(get_spec(EMBEDDING_MODEL), cache_dir=settings.MODEL_CACHE_DIR)
    token_ids = loaded.tokenizer(texts, add_special_tokens=True)["input_ids"]
    batches = [token_ids[start : start + batch_size] for start in range(0, len(token_ids), batch_size)]
    threads = max(1, (os.cpu_count() or 1) // parallel)

    def worker(share: int) -> int:
        torch.set_num_threads(threads)
        embed_token_ids(loaded, batches[share])  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for batch in batches[share::parallel]:
                embed_token_ids(loaded, batch)
                done += len(batch)
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        done = sum(pool.map(worker, range(parallel)))
    return done / (time.perf_counter() - started)


def served_embedding_rate(port: int, texts: list[str], seconds: float) -> float:
    bodies = [json.dumps({"model": EMBEDDING_MODEL, "input": text}).encode() for text in texts]
    asyncio.run(run_load("127.0.0.1", port, "/v1/embeddings", bodies, concurrency=EMBED_CLIENTS, duration=1.0))  # warm-up
    result = asyncio.run(run_load("127.0.0.1", port, "/v1/embeddings", bodies, concurrency=EMBED_CLIENTS, duration=seconds))
    _require_no_errors(result, "embeddings")
    return result.per_second


def _chat_bodies(prompts: list[str]) -> list[bytes]:
    return [
        json.dumps(
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": CHAT_TOKENS,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        for prompt in prompts
    ]


def streamed_chat(port: int, prompts: list[str], clients: int, requests_per_client: int) -> LoadResult:
    result = asyncio.run(
        run_load(
            "127.0.0.1",
            port,
            "/v1/chat/completions",
            _chat_bodies(prompts),
            concurrency=clients,
            requests_per_client=requests_per_client,
            streaming=True,
        )
    )
    _require_no_errors(result, "chat")
    return result


def _generated_tokens(port: int) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("switchboard:generation_tokens_total"):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("the server exports no switchboard:generation_tokens_total")


def steady_chat(port: int, prompts: list[str], clients: int, seconds: float) -> tuple[float, LoadResult]:
    """Aggregate output tokens/s while `clients` streams are continuously busy: the
    server's own token counter, read after a warm-up and again `seconds` later, so
    neither the ramp-up nor clients finishing at different times skews the figure."""
    warm = 4.0
    outcome: list[LoadResult] = []
    load = threading.Thread(
        target=lambda: outcome.append(
            asyncio.run(
                run_load(
                    "127.0.0.1",
                    port,
                    "/v1/chat/completions",
                    _chat_bodies(prompts),
                    concurrency=clients,
                    duration=warm + seconds,
                    streaming=True,
                )
            )
        )
    )
    load.start()
    time.sleep(warm)
    before, started = _generated_tokens(port), time.perf_counter()
    time.sleep(seconds)
    rate = (_generated_tokens(port) - before) / (time.perf_counter() - started)
    load.join()
    _require_no_errors(outcome[0], "chat")
    return rate, outcome[0]


def static_batch_rate(prompts: list[str]) -> float:
    torch.set_num_threads(os.cpu_count() or 1)  # the raw embedding runs may have narrowed it
    loaded = loading.load(get_spec(CHAT_MODEL), cache_dir=settings.MODEL_CACHE_DIR)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        for prompt in prompts
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.device)
    with torch.inference_mode():
        loaded.model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # type: ignore[operator]
        started = time.perf_counter()
        loaded.model.generate(  # type: ignore[operator]  # transformers' stubs type generate as a Tensor
            **batch, max_new_tokens=CHAT_TOKENS, min_new_tokens=CHAT_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        elapsed = time.perf_counter() - started
    return len(prompts) * CHAT_TOKENS / elapsed


def _require_no_errors(result: LoadResult, what: str) -> None:
    if result.errors or not result.completed:
        raise RuntimeError(f"{what} benchmark: {result.errors} errors, {result.completed} completed")


def run(*, seconds: float = 10.0, log: Any = print) -> ServingFigures:
    texts = sentences(512)
    log("embeddings: raw forward passes in this process ...")
    # The limit is the best arrangement of the bare forward pass: one pass on both cores
    # (batches of 32 or 64), or two single-core passes side by side, as the server runs them.
    plain = max(raw_embedding_rate(texts, seconds / 3, 32), raw_embedding_rate(texts, seconds / 3, 64))
    raw = max(plain, raw_embedding_rate(texts, seconds / 3, EMBED_BATCH, parallel=EMBED_PARALLEL))
    log(f"  {raw:.1f} texts/s (one pass on all cores: {plain:.1f})")
    with model_server(
        EMBEDDING_MODEL, "--max-batch-size", str(EMBED_BATCH), "--parallel-batches", str(EMBED_PARALLEL), cache_dir=settings.MODEL_CACHE_DIR
    ) as server:
        log(f"embeddings: {EMBED_CLIENTS} HTTP clients, dynamic batching ({EMBED_PARALLEL} passes of up to {EMBED_BATCH} at once) ...")
        served = served_embedding_rate(server.port, texts, seconds)
        log(f"  {served:.1f} texts/s")
    with model_server(EMBEDDING_MODEL, "--no-batching", cache_dir=settings.MODEL_CACHE_DIR) as server:
        log(f"embeddings: {EMBED_CLIENTS} HTTP clients, batching off ...")
        unbatched = served_embedding_rate(server.port, texts, seconds)
        log(f"  {unbatched:.1f} texts/s")
    prompts = chat_prompts(64)
    with model_server(CHAT_MODEL, "--max-batch-size", str(CHAT_CLIENTS), cache_dir=settings.MODEL_CACHE_DIR) as server:
        streamed_chat(server.port, prompts[:2], clients=1, requests_per_client=1)  # warm-up
        log(f"chat: 1 streaming client, up to {CHAT_TOKENS} tokens per request ...")
        single, _ = steady_chat(server.port, prompts, clients=1, seconds=seconds)
        log(f"  {single:.1f} tokens/s")
        log(f"chat: {CHAT_CLIENTS} streaming clients ...")
        together, concurrent = steady_chat(server.port, prompts, clients=CHAT_CLIENTS, seconds=seconds)
        log(f"  {together:.1f} tokens/s")
    log(f"chat: static generate() batch of {CHAT_CLIENTS} in this process ...")
    static = static_batch_rate(prompts[:CHAT_CLIENTS])
    log(f"  {static:.1f} tokens/s")
    ttfts = [stream.ttft * 1000 for stream in concurrent.streams]
    return ServingFigures(
        embeddings_raw_per_s=raw,
        embeddings_plain_forward_per_s=plain,
        embeddings_served_per_s=served,
        embeddings_unbatched_per_s=unbatched,
        chat_single_tokens_per_s=single,
        chat_concurrent_tokens_per_s=together,
        chat_static_tokens_per_s=static,
        chat_ttft_p50_ms=statistics.median(ttfts),
        chat_ttft_p99_ms=_percentile(ttfts, 0.99),
    )


def table(figures: ServingFigures) -> str:
    data = figures.as_json()
    rows = [
        (
            "Embeddings, 64 clients: served vs best raw forward passes",
            f"{data['embeddings_served_texts_per_s']} vs {data['embeddings_raw_texts_per_s']} texts/s",
            f"{data['embeddings_vs_raw']:.2f}",
            ">= 0.90",
        ),
        (
            "Embeddings, 64 clients: served vs one raw pass on all cores",
            f"{data['embeddings_served_texts_per_s']} vs {data['embeddings_plain_forward_texts_per_s']} texts/s",
            f"{data['embeddings_vs_plain_forward']:.2f}",
            "(context)",
        ),
        (
            "Embeddings, 64 clients: batching vs batching off",
            f"{data['embeddings_served_texts_per_s']} vs {data['embeddings_unbatched_texts_per_s']} texts/s",
            f"{data['embeddings_vs_unbatched']:.2f}x",
            ">= 3.5x",
        ),
        (
            "Chat, 16 streams vs 1 stream",
            f"{data['chat_concurrent_tokens_per_s']} vs {data['chat_single_tokens_per_s']} tokens/s",
            f"{data['chat_vs_single']:.2f}x",
            ">= 6x",
        ),
        (
            "Chat, 16 streams vs static generate() batch of 16",
            f"{data['chat_concurrent_tokens_per_s']} vs {data['chat_static_batch_tokens_per_s']} tokens/s",
            f"{data['chat_vs_static_batch']:.2f}",
            ">= 0.85",
        ),
        ("Chat, 16 streams: time to first token", f"p50 {data['chat_ttft_p50_ms']} ms, p99 {data['chat_ttft_p99_ms']} ms", "", ""),
    ]
    lines = ["| benchmark | measured | ratio | goal |", "|---|---|---|---|"]
    lines += [f"| {name} | {measured} | {ratio} | {goal} |" for name, measured, ratio, goal in rows]
    return "\n".join(lines)
