"""Model servers shared by the serving tests: each real model is loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.servers import model_server

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def chat_server() -> Iterator[str]:
    with model_server(CHAT_MODEL) as (url, _):
        yield url


@pytest.fixture(scope="session")
def embedding_server() -> Iterator[str]:
    with model_server(EMBEDDING_MODEL) as (url, _):
        yield url


@pytest.fixture(scope="session")
def chat_tokenizer():  # type: ignore[no-untyped-def]
    from modelserver.loading import smollm2_tokenizer

    return smollm2_tokenizer(cache_dir=settings.MODEL_CACHE_DIR)


@pytest.fixture(scope="session")
def tiny_chat_server() -> Iterator[str]:
    with model_server("tiny-chat") as (url, _):
        yield url


@pytest.fixture(scope="session")
def tiny_embedding_server() -> Iterator[str]:
    with model_server("tiny-embedding") as (url, _):
        yield url
