"""The embedded broker (config/broker.py) under concurrent producers and consumers in
separate processes, as `up` runs them: every message arrives exactly once and no reader
ever sees a half-written file. Upstream kombu's filesystem transport fails this (a reader
takes a message file before it is written; see the module's docstring)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from queue import Empty

from kombu import Connection

from config.broker import Transport

PRODUCERS, CONSUMERS, EACH = 3, 3, 300


def _options(root: Path) -> dict[str, object]:
    for sub in ("queue", "processed", "control"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
    }


def _produce(root: str, producer: int) -> None:
    with Connection("filesystem://", transport=Transport, transport_options=_options(Path(root))) as connection:
        queue = connection.SimpleQueue("work")  # declares and binds: rewrites the exchange table too
        for index in range(EACH):
            queue.put({"producer": producer, "index": index, "padding": "x" * 2000})
        queue.close()


def _consume(root: str, results: multiprocessing.Queue, errors: multiprocessing.Queue) -> None:
    seen: list[tuple[int, int]] = []
    try:
        with Connection("filesystem://", transport=Transport, transport_options=_options(Path(root))) as connection:
            queue = connection.SimpleQueue("work")
            idle = 0
            while idle < 20:
                try:
                    message = queue.get(block=True, timeout=0.1)
                except Empty:
                    idle += 1
                    continue
                idle = 0
                seen.append((message.payload["producer"], message.payload["index"]))
                message.ack()
            queue.close()
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
        errors.put(repr(error))
    results.put(seen)


def test_concurrent_processes_pass_every_message_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results, errors = context.Queue(), context.Queue()
    consumers = [context.Process(target=_consume, args=(str(tmp_path), results, errors)) for _ in range(CONSUMERS)]
    producers = [context.Process(target=_produce, args=(str(tmp_path), index)) for index in range(PRODUCERS)]
    for process in consumers + producers:
        process.start()
    for process in producers:
        process.join(120)
    received = [item for _ in consumers for item in results.get(timeout=180)]
    for process in consumers:
        process.join(30)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert sorted(received) == [(producer, index) for producer in range(PRODUCERS) for index in range(EACH)]
