"""OpenAI request bodies, validated strictly: a wrong type is a 400 naming the field, not a
silent coercion. Parameters OpenAI defines but this server cannot honour are refused
with a message, never ignored."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    # Defined by OpenAI, accepted only at the value that means "off".
    unsupported: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _Strict:
        extra = self.model_extra or {}
        for name, neutral in self.unsupported.items():
            if name in extra and extra[name] not in (None, neutral):
                raise ValueError(f"`{name}` is not supported by this server; remove it or set it to {neutral!r}")
        return self


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)]


class _Generation(_Strict):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: int | None = None
    stop: Stop | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    user: str | None = None

    unsupported: ClassVar[dict[str, Any]] = {
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logit_bias": {},
        "best_of": 1,
        "echo": False,
        "suffix": None,
    }

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Generation:
        if self.stream_options is not None and not self.stream:
            raise ValueError("`stream_options` is only allowed when `stream` is true")
        if self.stop is not None and any(stop == "" for stop in self.stop_strings):
            raise ValueError("`stop` strings must not be empty")
        return self


class ChatCompletionRequest(_Generation):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    unsupported: ClassVar[dict[str, Any]] = {
        **_Generation.unsupported,
        "tools": [],
        "tool_choice": "none",
        "functions": [],
        "response_format": {"type": "text"},
        "top_logprobs": 0,
    }

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(_Strict):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _no_empty_strings(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        for index, text in enumerate(texts):
            if text == "":
                raise ValueError(f"input[{index}] is empty; send non-empty text" if isinstance(value, list) else "input is empty")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
