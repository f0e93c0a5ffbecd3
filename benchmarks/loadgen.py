"""A lean HTTP/1.1 load generator for benchmarks: keep-alive connections on raw asyncio
streams, so the client spends as little of this small machine's CPU as possible and the
server, not the load generator, is what gets measured."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StreamResult:
    ttft: float  # seconds from sending to the first content chunk
    total: float
    completion_tokens: int


@dataclass
class LoadResult:
    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.completed / self.elapsed if self.elapsed else 0.0


def _request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunks(reader: asyncio.StreamReader, on_chunk: Callable[[bytes], None]) -> None:
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return
        on_chunk(await reader.readexactly(size))
        await reader.readline()


async def _one_plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    status, headers = await _read_head(reader)
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await _read_chunks(reader, lambda chunk: None)
    return status


async def _one_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, StreamResult]:
    started = time.perf_counter()
    first: list[float] = []
    tokens = [0]
    buffer = bytearray()

    def on_chunk(chunk: bytes) -> None:
        buffer.extend(chunk)
        while b"\n\n" in buffer:
            frame, _, rest = bytes(buffer).partition(b"\n\n")
            buffer[:] = rest
            if not frame.startswith(b"data: {"):
                continue
            event = json.loads(frame[6:])
            if event.get("usage"):
                tokens[0] = event["usage"]["completion_tokens"]
            elif not first and event.get("choices") and event["choices"][0].get("delta", {}).get("content"):
                first.append(time.perf_counter())

    writer.write(request)
    status, headers = await _read_head(reader)
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await _read_chunks(reader, on_chunk)
    done = time.perf_counter()
    return status, StreamResult(ttft=(first[0] if first else done) - started, total=done - started, completion_tokens=tokens[0])


async def run_load(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    duration: float | None = None,
    requests_per_client: int | None = None,
    streaming: bool = False,
) -> LoadResult:
    """`concurrency` clients, each on its own keep-alive connection, send bodies in turn
    until `duration` seconds pass or each has sent `requests_per_client`."""
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + duration if duration else float("inf")

    async def client(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        sent = 0
        try:
            while time.perf_counter() < deadline and (requests_per_client is None or sent < requests_per_client):
                request = _request_bytes(host, port, path, bodies[(index + sent * concurrency) % len(bodies)])
                sent += 1
                if streaming:
                    status, stream = await _one_stream(reader, writer, request)
                    if status == 200:
                        result.streams.append(stream)
                else:
                    status = await _one_plain(reader, writer, request)
                if status == 200:
                    result.completed += 1
                else:
                    result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(index) for index in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result
