"""Backends against real models: a local run (our Engine), the same weights in HF transformers,
and `groklm serve` over HTTP, cross-checked against each other and against the `openai` client."""

from __future__ import annotations

import json
import sys

import httpx
import pytest
import torch

from groklm.apps.backends import (
    BackendError,
    HFBackend,
    LocalBackend,
    OpenAIBackend,
    load_backend,
)
from groklm.errors import ConfigError
from groklm.tokenizer.chat import render_prompt

from helpers.apps import random_hf_backend, random_run, spam_run, spam_server

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file

SPAM = [{"role": "user", "content": "Is this email spam? Answer spam or not spam.\n"
         "Congratulations Ann! You won a car. Click bit.ly/free to claim it now."}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "city": {"enum": ["Lyon", "Oslo"]}},
          "required": ["name", "age", "city"]}
WEATHER = {"type": "function", "function": {"name": "weather", "description": "The weather.", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Lyon", "Oslo"]}, "day": {"type": "string", "maxLength": 8}},
    "required": ["city", "day"]}}}


@pytest.fixture(scope="module")
def local():
    return LocalBackend(spam_run())


@pytest.fixture(scope="module")
def server():
    return spam_server()


@pytest.fixture(scope="module")
def remote(server):
    return OpenAIBackend(server.url + "/v1")  # the model name comes from /v1/models


def test_backend_specs(server):
    assert isinstance(load_backend(f"local:{random_run()}"), LocalBackend)
    remote = load_backend(f"openai:{server.url}/v1#tiny")
    assert isinstance(remote, OpenAIBackend) and remote.model == "tiny"
    for bad in ("runs/chat", "local:", "vllm:http://x", "hf"):
        with pytest.raises(ConfigError, match="unknown backend"):
            load_backend(bad)
    with pytest.raises(ConfigError, match="not a transformers checkpoint"):
        HFBackend(random_run())  # a groklm run, not an HF directory


def test_local_chat_stream_logprobs_and_counts(local):
    reply = local.chat(SPAM, max_tokens=8, logprobs=3)
    assert reply.text == "spam" and reply.finish_reason == "stop"
    prompt = render_prompt(local.tokenizer, SPAM)
    assert reply.usage.input_tokens == len(prompt) == local.count_tokens(SPAM)
    # The first token's logprob, recomputed from the model's own logits.
    with torch.no_grad():
        logits, _ = local.engine.model(torch.tensor([prompt]))
    logp = logits[0, -1, : local.tokenizer.vocab_size].log_softmax(-1)
    first = reply.logprobs[0]
    assert first.logprob == pytest.approx(logp.max().item(), abs=1e-4)
    assert first.top[0][0] == first.token and len(first.top) == 3
    assert "".join(local.stream(SPAM, max_tokens=8)) == reply.text
    # Stop strings cut the text before them, in chat and stream alike.
    cut = local.chat(SPAM, max_tokens=8, stop=["am"])
    assert cut.text == "sp" and cut.finish_reason == "stop" and "".join(local.stream(SPAM, max_tokens=8, stop=["am"])) == "sp"
    with pytest.raises(ConfigError, match="temperature"):
        local.chat(SPAM, temperature=3)
    with pytest.raises(ConfigError, match="unknown chat option"):
        local.chat(SPAM, frequency_penalty=1.0)


def test_local_grammar_constrains_a_random_model():
    backend = LocalBackend(random_run())
    for seed in range(3):
        reply = backend.chat([{"role": "user", "content": "Who?"}], json_schema=PERSON, max_tokens=120, temperature=1.0, seed=seed)
        value = json.loads(reply.text)  # a random model, and still valid JSON of the right shape
        assert list(value) == ["name", "age", "city"] and value["city"] in ("Lyon", "Oslo") and len(value["name"]) <= 12
        assert 0 <= value["age"] <= 120 and reply.finish_reason == "stop"  # bounds enforced too (grammar_schema)
    reply = backend.chat([{"role": "user", "content": "Pick"}], regex=r"(yes|no)!", temperature=1.0, seed=0)
    assert reply.text in ("yes!", "no!")
    unconstrained = backend.chat([{"role": "user", "content": "Who?"}], max_tokens=40, temperature=1.0, seed=0)
    with pytest.raises(json.JSONDecodeError):
        json.loads(unconstrained.text)


def test_hf_backend_matches_the_local_engine():
    """The same weights in transformers (the exported run) and in our engine: same replies, same scores."""
    local, hf = LocalBackend(random_run()), random_hf_backend()
    assert hf.capabilities >= {"grammar", "score", "logprobs", "tools"}
    conversations = [SPAM, [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Hi Leo, lunch?"}]]
    for messages in conversations:
        ours, theirs = local.chat(messages, max_tokens=12, logprobs=2), hf.chat(messages, max_tokens=12, logprobs=2)
        assert theirs.text == ours.text and theirs.usage == ours.usage and theirs.finish_reason == ours.finish_reason
        assert [lp.logprob for lp in theirs.logprobs] == pytest.approx([lp.logprob for lp in ours.logprobs], abs=1e-4)
        assert hf.score(messages, ["spam", "not spam"]) == pytest.approx(local.score(messages, ["spam", "not spam"]), abs=1e-3)
        assert hf.count_tokens(messages) == local.count_tokens(messages)
    ours = local.chat(SPAM, json_schema=PERSON, max_tokens=60)
    theirs = hf.chat(SPAM, json_schema=PERSON, max_tokens=60)
    assert theirs.text == ours.text and json.loads(theirs.text)["city"] in ("Lyon", "Oslo")
    assert "".join(hf.stream(SPAM, json_schema=PERSON, max_tokens=60)) == ours.text
    stop = ours.text[5:7]
    assert "".join(hf.stream(SPAM, json_schema=PERSON, max_tokens=60, stop=[stop])) == ours.text[: ours.text.index(stop)]
    assert hf.chat(SPAM, json_schema=PERSON, max_tokens=60, stop=[stop]).text == ours.text[: ours.text.index(stop)]


def test_hf_backend_needs_transformers(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install transformers"):
        HFBackend(tmp_path)


def test_openai_backend_against_groklm_serve(local, remote, server):
    ours = local.chat(SPAM, max_tokens=8, logprobs=2)
    theirs = remote.chat(SPAM, max_tokens=8, logprobs=2)
    assert theirs.text == ours.text and theirs.usage == ours.usage and theirs.model == "tiny"
    assert [lp.logprob for lp in theirs.logprobs] == pytest.approx([lp.logprob for lp in ours.logprobs], abs=1e-4)
    assert "".join(remote.stream(SPAM, max_tokens=8)) == ours.text
    # The openai client, an independent reader of the same endpoint, sees the same reply.
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    completion = client.chat.completions.create(model="tiny", messages=SPAM, max_tokens=8, temperature=0)
    assert completion.choices[0].message.content == theirs.text
    assert completion.usage.prompt_tokens == theirs.usage.input_tokens
    # json_schema goes out as response_format, and the server's grammar enforces it. (Keys in
    # alphabetical order: the server compiles the schema with sorted keys.)
    place = {"type": "object", "properties": {"city": {"enum": ["Lyon", "Oslo"]}, "name": {"type": "string", "maxLength": 12}},
             "required": ["city", "name"]}
    shaped = remote.chat(SPAM, json_schema=place, max_tokens=60)
    assert json.loads(shaped.text)["city"] in ("Lyon", "Oslo")
    assert shaped.text == local.chat(SPAM, json_schema=place, max_tokens=60).text
    # A forced tool call comes back as tool_calls with schema-valid arguments.
    called = remote.chat([{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER], tool_choice="required", max_tokens=60)
    assert called.finish_reason == "tool_calls" and called.tool_calls[0].name == "weather"
    assert json.loads(called.tool_calls[0].arguments)["city"] in ("Lyon", "Oslo")
    assert called.message()["tool_calls"][0]["function"]["name"] == "weather"


def test_http_errors_are_backend_errors(remote, server):
    with pytest.raises(BackendError, match="answered 400") as error:
        remote.chat(SPAM, max_tokens=0)
    assert error.value.status == 400
    with pytest.raises(ConfigError, match="cannot enforce a regex"):
        remote.chat(SPAM, regex="a+")
    with pytest.raises(BackendError, match="ConnectError"):
        OpenAIBackend("http://127.0.0.1:9/v1", model="x", timeout=5).chat(SPAM)
    key_checked = OpenAIBackend("http://test/v1", model="m", api_key="sk-1", transport=httpx.MockTransport(
        lambda request: httpx.Response(401, json={"error": {"message": f"bad key {request.headers['authorization']}"}})))
    with pytest.raises(BackendError, match="401: bad key Bearer sk-1"):
        key_checked.chat(SPAM)
