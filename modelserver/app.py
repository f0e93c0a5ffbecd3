"""The model server's HTTP API: OpenAI-compatible endpoints, /health and /metrics.

One process serves one model. The model loads in the background after the server starts,
so /health can say 503 until it has loaded and run a warm-up pass, and again if the
engine breaks or the server is draining.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse


class FastJSONResponse(JSONResponse):
    """orjson: about 15x faster than json for a 384-float embedding, which matters at
    hundreds of responses a second on two cores."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


from starlette.routing import Route
from tokenizers import Tokenizer

from modelserver import loading
from modelserver.catalog import ModelSpec, Task
from modelserver.embedding import DynamicBatcher
from modelserver.errors import EngineUnavailable, QueueFull
from modelserver.generation import ContinuousBatchingEngine, Failed, Finished, GenerationRequest, SamplingParams, TextDelta
from modelserver.metrics import ServingMetrics
from modelserver.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, RefusedParameter

log = logging.getLogger(__name__)
T = TypeVar("T")
Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class ServerOptions:
    cache_dir: Path  # converted weights kept between starts (loading.py)
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    parallel_batches: int = 1  # embeddings: forward passes in flight at once
    fault_rate: float = 0.0  # injected faults (tests, drills): this share of inference requests answers 500


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code, self.retry_after = status, message, type_, param, code, retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return FastJSONResponse(body, status_code=self.status, headers=headers)


def _unavailable(message: str) -> ApiError:
    return ApiError(503, message, type_="service_unavailable_error", code="model_not_ready", retry_after=5)


class ModelServer:
    def __init__(self, spec: ModelSpec, options: ServerOptions) -> None:
        self.spec = spec
        self.options = options
        self.metrics = ServingMetrics(spec.name, max_batch_size=options.max_batch_size, max_wait_ms=options.max_wait_ms)
        self.loaded: loading.LoadedModel | None = None
        self.generator: ContinuousBatchingEngine | None = None
        self.embedder: DynamicBatcher | None = None
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.created = int(time.time())

    # --- lifecycle -------------------------------------------------------------------------

    async def load_and_warm_up(self) -> None:
        try:
            self.loaded = await asyncio.to_thread(functools.partial(loading.load, self.spec, cache_dir=self.options.cache_dir))
            if self.spec.task is Task.CHAT:
                self.generator = ContinuousBatchingEngine(
                    self.loaded, self.metrics, max_batch_size=self.options.max_batch_size, max_queue=self.options.max_queue
                )
                self.generator.start()
                await self._generate_text(self.loaded.tokenizer.encode("Hello"), SamplingParams(max_tokens=1, temperature=0), None)
            else:
                self.embedder = DynamicBatcher(
                    self.loaded,
                    self.metrics,
                    max_batch_size=self.options.max_batch_size,
                    max_wait_ms=self.options.max_wait_ms,
                    max_queue=self.options.max_queue,
                    parallel_batches=self.options.parallel_batches,
                )
                self.embedder.start()
                await self.embedder.embed([self.loaded.tokenizer.encode("warm-up")])
            self.ready = True
            log.info("%s is ready on %s (%s)", self.spec.name, self.loaded.device, self.loaded.dtype)
        except Exception as error:
            log.exception("loading %s failed", self.spec.name)
            self.load_error = f"{type(error).__name__}: {error}"

    async def shutdown(self) -> None:
        if self.generator is not None:
            await asyncio.to_thread(self.generator.stop)
        if self.embedder is not None:
            await self.embedder.stop()

    def health(self) -> tuple[int, dict[str, Any]]:
        broken = self.load_error or (self.generator and self.generator.broken) or (self.embedder and self.embedder.broken)
        if broken:
            return 503, {"status": "broken", "model": self.spec.name, "reason": broken}
        if self.draining:
            return 503, {"status": "draining", "model": self.spec.name}
        if not self.ready:
            return 503, {"status": "loading", "model": self.spec.name}
        return 200, {"status": "ready", "model": self.spec.name, "device": str(self.loaded.device) if self.loaded else None}

    def _require(self, task: Task, endpoint: str) -> loading.LoadedModel:
        if self.spec.task is not task:
            raise ApiError(
                400,
                f"{endpoint} is not served by {self.spec.name}, {_article(str(self.spec.task))} {self.spec.task} model.",
                param="model",
                code="unsupported_endpoint",
            )
        status, body = self.health()
        if status != 200 or self.loaded is None:
            raise _unavailable(
                f"{self.spec.name} is {body['status']}" + (f": {body['reason']}" if "reason" in body else "; retry shortly.")
            )
        return self.loaded

    # --- generation --------------------------------------------------------------------

    async def _generate_text(self, prompt_ids: list[int], params: SamplingParams, http: Request | None) -> tuple[str, Finished]:
        request = self._submit(prompt_ids, params)
        parts: list[str] = []

        async def collect() -> Finished:
            while True:
                event = await request.events.get()
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    return event
                else:
                    raise _unavailable(event.message)

        try:
            finished = await _unless_disconnected(http, collect())
        finally:
            request.cancel()
        return "".join(parts), finished

    def _submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationRequest:
        assert self.generator is not None
        request = GenerationRequest(prompt_ids=prompt_ids, params=params, loop=asyncio.get_running_loop())
        try:
            self.generator.submit(request)
        except QueueFull as full:
            self.metrics.queue_rejections.inc()
            raise ApiError(
                503,
                f"The server is at capacity ({full}); retry after a second.",
                type_="overloaded_error",
                code="queue_full",
                retry_after=1,
            ) from None
        except EngineUnavailable as unavailable:
            raise _unavailable(str(unavailable)) from None
        return request

    def sampling_params(self, body: ChatCompletionRequest | CompletionRequest, prompt_tokens: int) -> SamplingParams:
        context = self.spec.max_context
        if prompt_tokens >= context:
            raise ApiError(
                400,
                f"The prompt has {prompt_tokens} tokens; this model's context length is {context}. Shorten it.",
                param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
                code="context_length_exceeded",
            )
        limit = body.token_limit
        if limit is not None and prompt_tokens + limit > context:
            param = (
                "max_completion_tokens"
                if isinstance(body, ChatCompletionRequest) and body.max_completion_tokens is not None
                else "max_tokens"
            )
            raise ApiError(
                400,
                f"{param}={limit} plus the prompt's {prompt_tokens} tokens exceeds the context length of {context}; "
                f"set {param} to at most {context - prompt_tokens}.",
                param=param,
                code="context_length_exceeded",
            )
        return SamplingParams(
            max_tokens=limit or context - prompt_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stop_strings,
        )

    async def chat(self, http: Request) -> Response:
        body = await _parse(http, ChatCompletionRequest)
        self._check_model(body.model)
        self._require(Task.CHAT, "/v1/chat/completions")
        messages = [
            {"role": "system" if message.role == "developer" else message.role, "content": message.text()} for message in body.messages
        ]
        prompt_ids = await _off_loop_if_large(sum(len(message["content"]) for message in messages), self._chat_prompt_ids, messages)
        params = self.sampling_params(body, len(prompt_ids))
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _sse(self._chat_chunks(self._submit(prompt_ids, params), completion_id, created, body.include_usage))
        content, finished = await self._generate_text(prompt_ids, params, http)
        return FastJSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": self.spec.name,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None, "finish_reason": finished.reason}
                ],
                "usage": _usage(finished),
                "system_fingerprint": None,
            }
        )

    async def _chat_chunks(
        self, request: GenerationRequest, completion_id: str, created: int, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.spec.name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                body["usage"] = None
            return body

        yield chunk({"role": "assistant", "content": ""})
        async for event in _events(request):
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            else:
                yield chunk({}, event.reason)
                if include_usage:
                    yield {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.spec.name,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": _usage(event),
                    }

    async def completions(self, http: Request) -> Response:
        body = await _parse(http, CompletionRequest)
        self._check_model(body.model)
        loaded = self._require(Task.CHAT, "/v1/completions")
        prompt_ids = loaded.tokenizer(body.prompt_text, add_special_tokens=False)["input_ids"]
        if not prompt_ids:
            raise ApiError(400, "The prompt is empty; send some text.", param="prompt")
        params = self.sampling_params(body, len(prompt_ids))
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _sse(self._completion_chunks(self._submit(prompt_ids, params), completion_id, created, body.include_usage))
        text, finished = await self._generate_text(prompt_ids, params, http)
        return FastJSONResponse(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": self.spec.name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finished.reason}],
                "usage": _usage(finished),
                "system_fingerprint": None,
            }
        )

    async def _completion_chunks(
        self, request: GenerationRequest, completion_id: str, created: int, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        def chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": self.spec.name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                body["usage"] = None
            return body

        async for event in _events(request):
            if isinstance(event, TextDelta):
                yield chunk(event.text)
            else:
                yield chunk("", event.reason)
                if include_usage:
                    yield {
                        "id": completion_id,
                        "object": "text_completion",
                        "created": created,
                        "model": self.spec.name,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": _usage(event),
                    }

    # --- embeddings --------------------------------------------------------------------

    async def embeddings(self, http: Request) -> Response:
        body = await _parse(http, EmbeddingRequest)
        self._check_model(body.model)
        self._require(Task.EMBEDDING, "/v1/embeddings")
        if body.dimensions is not None and body.dimensions != self.spec.embedding_dimensions:
            raise ApiError(
                400,
                f"{self.spec.name} returns {self.spec.embedding_dimensions} dimensions; omit `dimensions` or set it to that.",
                param="dimensions",
            )
        token_ids = await _off_loop_if_large(sum(len(text) for text in body.texts), self._encode_texts, body.texts)
        for index, ids in enumerate(token_ids):
            if len(ids) > self.spec.max_context:
                where = f"input[{index}]" if isinstance(body.input, list) else "input"
                raise ApiError(
                    400,
                    f"{where} has {len(ids)} tokens; {self.spec.name} takes at most {self.spec.max_context}. Split or shorten it.",
                    param="input",
                    code="context_length_exceeded",
                )
        assert self.embedder is not None
        try:
            vectors = await _unless_disconnected(http, self.embedder.embed(token_ids))
        except QueueFull as full:
            self.metrics.queue_rejections.inc()
            raise ApiError(
                503,
                f"The server is at capacity ({full}); retry after a second.",
                type_="overloaded_error",
                code="queue_full",
                retry_after=1,
            ) from None
        except EngineUnavailable as unavailable:
            raise _unavailable(str(unavailable)) from None
        data: list[Any]
        if body.encoding_format == "base64":
            data = [base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode() for vector in vectors]
        else:
            data = [vector.numpy() for vector in vectors]
        tokens = sum(len(ids) for ids in token_ids)
        return FastJSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": index, "embedding": embedding} for index, embedding in enumerate(data)],
                "model": self.spec.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # --- the rest ------------------------------------------------------------------------

    def _chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        assert self.loaded is not None
        text = self.loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._fast_tokenizer.encode_batch(texts, add_special_tokens=True)]

    @functools.cached_property
    def _fast_tokenizer(self) -> Tokenizer:
        # The Rust tokenizer without transformers' wrapper, which costs more than the
        # encoding itself; a copy, with truncation and padding off, so counts are exact.
        assert self.loaded is not None
        tokenizer: Tokenizer = copy.deepcopy(self.loaded.tokenizer.backend_tokenizer)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def _check_model(self, name: str) -> None:
        if name != self.spec.name:
            raise ApiError(
                404,
                f"The model `{name}` does not exist on this server; it serves `{self.spec.name}`.",
                param="model",
                code="model_not_found",
            )

    async def models(self, http: Request) -> Response:
        return FastJSONResponse(
            {"object": "list", "data": [{"id": self.spec.name, "object": "model", "created": self.created, "owned_by": "switchboard"}]}
        )

    async def health_endpoint(self, http: Request) -> Response:
        status, body = self.health()
        return FastJSONResponse(body, status_code=status, headers=None if status == 200 else {"Retry-After": "5"})

    async def metrics_endpoint(self, http: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- helpers ---------------------------------------------------------------------------------


async def _parse(http: Request, schema: type[Body]) -> Body:
    raw = await http.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"The body is not valid JSON ({error}).", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_json")
    try:
        return schema.model_validate(data)
    except RefusedParameter as refused:
        raise ApiError(400, refused.message, param=refused.param, code=refused.code) from None
    except ValidationError as error:
        # For a union (a string or a list, say) pydantic reports every branch; the one to
        # show is the branch the client meant: not a bare type mismatch, and the deepest.
        errors = error.errors(include_url=False)
        first = min(errors, key=lambda e: (e["type"].endswith("_type"), -len(e["loc"])))
        param = ".".join(str(part) for part in first["loc"] if not _is_union_branch(part)) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"{param}: {message}" if param else message, param=param, code="invalid_value") from None


LARGE_INPUT_CHARS = 16_384


async def _off_loop_if_large(chars: int, work: Callable[..., T], *args: Any) -> T:
    """Tokenizing a few sentences takes microseconds and stays on the loop; a large body
    goes to a thread so it cannot stall every other stream and /health."""
    if chars > LARGE_INPUT_CHARS:
        return await asyncio.to_thread(work, *args)
    return work(*args)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _is_union_branch(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


class ClientGone(Exception):
    """The client hung up before the answer: nothing to send, nothing to log."""


async def _until_disconnected(http: Request) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(http: Request | None, work: Awaitable[T]) -> T:
    """Awaits `work`, but gives up (cancelling it) if the client goes away first."""
    task = asyncio.ensure_future(work)
    if http is None:
        return await task
    watcher = asyncio.ensure_future(_until_disconnected(http))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ClientGone
    return task.result()


async def _events(request: GenerationRequest) -> AsyncIterator[TextDelta | Finished]:
    try:
        while True:
            event = await request.events.get()
            if isinstance(event, Failed):
                raise _unavailable(event.message)
            yield event
            if isinstance(event, Finished):
                return
    finally:
        request.cancel()  # a client that went away frees its batch slot at the next step


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except ApiError as error:
            body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
            yield b"data: " + orjson.dumps(body) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


def build_app(spec: ModelSpec, options: ServerOptions) -> tuple[Starlette, ModelServer]:
    server = ModelServer(spec, options)

    def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(http: Request) -> Response:
            try:
                return await handler(http)
            except ApiError as error:
                return error.response()
            except ClientGone:
                # Nobody is listening; the work was cancelled. An answer keeps the server from
                # logging a traceback for an ordinary hang-up (nginx's 499: client closed).
                return Response(status_code=499)

        return run

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = asyncio.create_task(server.load_and_warm_up())
        yield
        loader.cancel()
        await server.shutdown()

    def inference(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        if options.fault_rate <= 0:
            return endpoint(handler)
        faults = random.Random()

        async def faulty(http: Request) -> Response:
            if faults.random() < options.fault_rate:
                return ApiError(500, "Injected fault (--fault-rate).", type_="server_error", code="injected_fault").response()
            return await handler(http)

        return endpoint(faulty)

    routes = [
        Route("/health", endpoint(server.health_endpoint), methods=["GET"]),
        Route("/metrics", endpoint(server.metrics_endpoint), methods=["GET"]),
        Route("/v1/models", endpoint(server.models), methods=["GET"]),
        Route("/v1/chat/completions", inference(server.chat), methods=["POST"]),
        Route("/v1/completions", inference(server.completions), methods=["POST"]),
        Route("/v1/embeddings", inference(server.embeddings), methods=["POST"]),
    ]

    async def http_error(http: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        code = "not_found" if error.status_code == 404 else "method_not_allowed" if error.status_code == 405 else None
        endpoints = "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /health, /metrics"
        message = f"{http.method} {http.url.path}: {error.detail}. Endpoints: {endpoints}."
        return ApiError(error.status_code, message, code=code).response()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    return app, server
