"""`groklm serve` of the real SmolLM2-135M-Instruct, with default flags, through the official
`openai` client: plain and streamed chat in the model's own template, a forced tool call, a
json_schema reply, the chat page, and the resident memory the issue bounds (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from groklm.interop.imports import KNOWN_MODELS, find_known_model, import_run

from helpers.servers import KEY, MODEL, start_server, stop_server

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

GIB = 1024**3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    name = next(iter(KNOWN_MODELS))
    try:
        find_known_model(name)
    except Exception as error:  # not installed: say how, as the importer does
        pytest.skip(str(error))
    root = tmp_path_factory.mktemp("smol-serve")
    import_run(name, root / "run")  # the whole 8192-token context: the KV cache is sized by budget
    server = start_server(root / "run", root / "server.log", "--api-key", KEY)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_greedy_answer_in_the_models_own_template(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"  # stopped on the model's own <|im_end|>
    assert "<|im_end|>" not in choice.message.content


def test_stream_adds_up_to_the_whole_reply(client):
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == whole.choices[0].message.content


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_forced_tool_call_is_valid(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris, in celsius?"}],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    call = reply.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("c", "f")


def test_json_schema_reply_follows_the_schema(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Extract the person: Alice is 31 years old."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        temperature=0,
        max_tokens=60,
    )
    person = json.loads(reply.choices[0].message.content)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_chat_page_is_served(server):
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_resident_memory_stays_under_2_gib(server, client):
    client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=8)  # warm
    status = Path(f"/proc/{server.process.pid}/status")
    if not status.exists():
        pytest.skip("no /proc on this system")
    rss_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    assert rss_kib * 1024 < 2 * GIB, f"the server holds {rss_kib / 1024**2:.2f} GiB resident"
