"""OpenAI request bodies, validated strictly: a wrong type is a 400 naming the field, not a
silent coercion. Parameters OpenAI defines but this server cannot honour are refused
with a message naming them, never ignored. `null` means "the default" wherever OpenAI's
reference lets a parameter be null (temperature, top_p, n, stream ...)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RefusedParameter(Exception):
    """A parameter this server refuses, by name. Not a ValueError, so pydantic passes it on
    as it is and the answer can name the parameter (`param`)."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    # Defined by OpenAI, accepted only at the value that means "off".
    unsupported: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaulted = {name for name, field in cls.model_fields.items() if not field.is_required() and field.default is not None}
        return {key: value for key, value in data.items() if not (value is None and key in defaulted)}

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _Strict:
        extra = self.model_extra or {}
        for name, neutral in self.unsupported.items():
            if name in extra and extra[name] not in (None, neutral):
                message = f"`{name}` is not supported by this server; remove it or set it to {neutral!r}"
                raise RefusedParameter(name, message, code="unsupported_parameter")
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
            raise RefusedParameter("stream_options", "`stream_options` is only allowed when `stream` is true")
        if self.stop is not None and any(stop == "" for stop in self.stop_strings):
            raise RefusedParameter("stop", "`stop` strings must not be empty")
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
