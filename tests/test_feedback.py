"""Feedback capture: the server records every chat completion, takes thumbs and corrections on
/v1/feedback, and `groklm traces show` displays them; apps code rates its own traces."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading

import httpx
import pytest

from groklm.apps import tracing
from groklm.cli.main import build_parser, main
from groklm.errors import ConfigError
from groklm.infer.engine import AsyncEngine, Engine
from groklm.serve.api import create_app

from helpers.servers import MODEL, assert_error, chat_body, make_server_run

CHAT, FEEDBACK = "/v1/chat/completions", "/v1/feedback"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_server_run(tmp_path_factory.mktemp("feedback") / "run")


def serve(run, recorder, exchange):
    """Run `exchange(client)` against an in-process server with this recorder; return its result."""
    engine = AsyncEngine(Engine.from_run(run, max_batch=4))

    async def main():
        transport = httpx.ASGITransport(app=create_app(engine, MODEL, recorder=recorder), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await exchange(client)

    try:
        return asyncio.run(main())
    finally:
        engine.shutdown()


def stream_id_and_text(response: httpx.Response) -> tuple[str, str]:
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return chunks[0]["id"], text


def test_completions_are_recorded_and_take_feedback(run, tmp_path, capsys):
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]

    async def exchange(client):
        whole = await client.post(CHAT, json=chat_body(messages=messages, max_tokens=5, temperature=0))
        streamed = await client.post(CHAT, json=chat_body(max_tokens=4, temperature=0, stream=True))
        whole_id, streamed_id = whole.json()["id"], stream_id_and_text(streamed)[0]
        verdicts = [await client.post(FEEDBACK, json={"completion_id": whole_id, "rating": 1}),
                    await client.post(FEEDBACK, json={"completion_id": streamed_id, "rating": -1, "correction": "Hi!"})]
        errors = [await client.post(FEEDBACK, json=body) for body in (
            {"completion_id": "chatcmpl-unknown", "rating": 1},
            {"completion_id": whole_id, "rating": 2},
            {"completion_id": whole_id, "rating": True},
            {"completion_id": whole_id, "rating": 1, "note": "x"},
            {"rating": 1})]
        return whole, streamed, verdicts, errors

    whole, streamed, verdicts, errors = serve(run, store, exchange)
    assert [v.status_code for v in verdicts] == [200, 200], [v.text for v in verdicts]
    assert verdicts[1].json()["correction"] == "Hi!" and verdicts[1].json()["rating"] == -1
    unknown = assert_error(errors[0], 404, "no completion 'chatcmpl-unknown'")
    assert unknown["param"] == "completion_id" and unknown["code"] == "completion_not_found"
    assert [assert_error(e, 400)["param"] for e in errors[1:]] == ["rating", "rating", "note", "completion_id"]
    assert errors[1].json()["error"]["message"] == "rating: must be 1 (good) or -1 (bad)"

    whole_trace = store.trace(store.find_trace(whole.json()["id"]))
    (span,) = whole_trace
    a = span.attributes
    assert a[tracing.RESPONSE_ID] == whole.json()["id"] and a["gen_ai.request.model"] == MODEL
    assert json.loads(a["gen_ai.input.messages"]) == messages
    assert json.loads(a["gen_ai.output.messages"])[0]["content"] == whole.json()["choices"][0]["message"]["content"]
    assert a["gen_ai.usage.input_tokens"] == whole.json()["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == whole.json()["usage"]["completion_tokens"]
    assert span.end_time >= span.start_time and a["groklm.app"] == "serve"
    streamed_trace = store.find_trace(stream_id_and_text(streamed)[0])
    assert json.loads(store.trace(streamed_trace)[0].attributes["gen_ai.output.messages"])[0]["content"] == \
        stream_id_and_text(streamed)[1]
    assert [(f.rating, f.correction) for f in store.feedback(span.trace_id)] == [(1, None)]

    main(["traces", "show", streamed_trace[:10], "--db", str(store.path)])
    shown = capsys.readouterr().out
    assert "feedback" in shown and "-1 (bad)" in shown and "correction: Hi!" in shown
    main(["traces", "--db", str(store.path), "show", span.trace_id, "--json"])
    (root,) = json.loads(capsys.readouterr().out)
    assert [f["rating"] for f in root["feedback"]] == [1]


def test_a_recording_failure_is_logged_and_the_reply_still_goes_out(run, caplog):
    class Broken:
        def record_completion(self, *args, **kwargs):
            raise OSError("disk full")

    async def exchange(client):
        return [await client.post(CHAT, json=chat_body(stream=stream)) for stream in (False, True)]

    with caplog.at_level(logging.ERROR, logger="groklm.serve"):
        whole, streamed = serve(run, Broken(), exchange)
    assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["role"] == "assistant"
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert sum("could not record completion" in r.getMessage() for r in caplog.records) == 2


def test_a_trace_file_that_cannot_be_written_warns_once_and_the_server_answers(run, tmp_path):
    other = tmp_path / "other.sqlite"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE accounts (id INTEGER)")  # another program's database: never touched
    connection.commit()
    connection.close()

    async def exchange(client):
        return [(await client.post(CHAT, json=chat_body())).status_code for _ in range(2)]

    with pytest.warns(UserWarning, match="traces are not recorded from now on") as caught:
        assert serve(run, tracing.Tracer(other), exchange) == [200, 200]
    assert len(caught) == 1
    assert sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall() == [("accounts",)]


def test_a_server_without_traces_refuses_feedback_saying_why(run):
    async def exchange(client):
        reply = await client.post(CHAT, json=chat_body())
        return reply, await client.post(FEEDBACK, json={"completion_id": reply.json()["id"], "rating": 1})

    reply, refused = serve(run, None, exchange)
    assert reply.status_code == 200
    error = assert_error(refused, 404, "--no-traces")
    assert error["param"] == "completion_id" and error["code"] == "traces_off"


def test_concurrent_recording_and_feedback_lose_nothing(tmp_path):
    store = tracing.Tracer(tmp_path / "t.sqlite")

    def client(worker: int):
        for i in range(20):
            completion = f"chatcmpl-{worker}-{i}"
            store.record_completion(completion, "m", [{"role": "user", "content": f"q{worker}.{i}"}],
                                    [{"role": "assistant", "content": "a"}], {"prompt_tokens": 1, "completion_tokens": 1},
                                    ["stop"], 0.0, 0.1)
            store.record_feedback(completion, 1 if i % 2 else -1)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.traces_between()) == 160
    assert all(len(store.feedback(store.find_trace(f"chatcmpl-{w}-{i}"))) == 1 for w in range(8) for i in range(20))


def test_apps_code_rates_its_traces(traces):
    with tracing.span("invoke_agent helper") as root:
        pass
    tracing.record_feedback(root.trace_id, 1)
    tracing.record_feedback(root.trace_id, -1, "a better answer")  # a later verdict supersedes
    assert [(f.rating, f.correction) for f in traces.feedback(root.trace_id)] == [(1, None), (-1, "a better answer")]
    for bad in (0, 2, True, "1"):
        with pytest.raises(ConfigError, match="rating must be 1"):
            tracing.record_feedback(root.trace_id, bad)
    with pytest.raises(ConfigError, match="no trace or completion"):
        tracing.record_feedback("0" * 32, 1)
    with pytest.raises(ConfigError, match="correction must be text"):
        tracing.record_feedback(root.trace_id, 1, correction=5)


def test_serve_takes_a_trace_file_or_none_but_not_both():
    parser = build_parser()
    assert parser.parse_args(["serve", "r", "--no-traces"]).no_traces
    assert parser.parse_args(["serve", "r", "--traces", "t.sqlite"]).traces == "t.sqlite"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "r", "--no-traces", "--traces", "t.sqlite"])


def test_thumbs_on_served_answers_train_a_kto_run(run, tmp_path, capsys):
    """The loop end to end: answers served, rated up and down on /v1/feedback, exported as KTO
    examples by `groklm traces export`, and `groklm kto` trains the served model on them."""
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    questions = ["hello", "what is 2+2", "name a colour", "say hi", "count to 3", "bye"]

    async def exchange(client):
        for i, question in enumerate(questions):
            body = chat_body(messages=[{"role": "user", "content": question}], max_tokens=6, temperature=0)
            reply = await client.post(CHAT, json=body)
            rating = await client.post(FEEDBACK, json={"completion_id": reply.json()["id"], "rating": 1 if i % 2 else -1})
            assert rating.status_code == 200, rating.text

    serve(run, store, exchange)
    thumbs = tmp_path / "thumbs.jsonl"
    main(["traces", "export", "--db", str(store.path), "--format", "kto", "--out", str(thumbs)])
    assert "wrote 6 kto records" in capsys.readouterr().out
    out = tmp_path / "kto"
    main(["kto", str(run), "--data", str(thumbs), "--val", str(thumbs), "--out", str(out), "--no-progress",
          "--set", "max_iters=2", "batch_size=6", "eval_interval=2", "eval_iters=1", "warmup_iters=0"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and "val_loss" in metrics[-1]
    assert json.loads((out / "config.json").read_text())["stage"] == "kto"
