"""Agents: the ReAct and native loops, recovery from unusable replies, limits, traces, the CLI.

The loop logic is checked against a scripted backend (replies fixed in the test, tools real);
the loops then run for real on a local model, and over HTTP against `groklm serve`.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import Field

from groklm.apps.agent import Agent, parse_react
from groklm.apps.backends import LocalBackend, OpenAIBackend, Usage
from groklm.apps.tools import calculator
from groklm.cli.main import main
from groklm.errors import ConfigError

from helpers.apps import random_run, spam_server
from helpers.backends import Scripted

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file


def lookup(city: Literal["Lyon", "Oslo"]) -> str:
    """The population of a city.

    Args:
        city: the city
    """
    return {"Lyon": "522000", "Oslo": "709000"}[city]


def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def test_react_loop_recovers_from_every_kind_of_mistake():
    script = [
        "I should just guess.",  # no action at all
        "Thought: use a tool\nAction: weather\nAction Input: {}",  # unknown tool
        'Thought: compute\nAction: calculator\nAction Input: {"expression": "6 *"}',  # the tool fails
        "Thought: again\nAction: calculator\nAction Input: 6*7\nObservation: 41 (made up)",  # bare input, invented observation
        'Thought: and the city\nAction: lookup\nAction Input: {"city": "Paris"}',  # invalid argument
        "Thought: I know it\nFinal Answer: 42",
    ]
    backend = Scripted(script, capabilities=frozenset())
    steps = []
    result = Agent(backend, [calculator, lookup], mode="react", max_steps=10).run("What is 6*7?", on_step=steps.append)
    assert result.answer == "42" and result.stopped == "answer" and len(result.steps) == 6 == len(steps)
    assert [s.kind for s in result.steps] == ["invalid", "tool", "tool", "tool", "tool", "final"]
    calls = [s.calls[0] for s in result.steps[1:5]]
    assert "no tool 'weather'" in calls[0]["observation"] and "cannot parse" in calls[1]["observation"]
    assert calls[2] == {"name": "calculator", "arguments": "6*7", "observation": "42", "ok": True}
    assert not calls[3]["ok"] and "city: Input should be 'Lyon' or 'Oslo'" in calls[3]["observation"]
    # What the model saw: the format and the tools in the system prompt, each observation as a user turn,
    # and the invented observation cut from its own turn.
    system = backend.sent[0]["messages"][0]["content"]
    assert "Action Input:" in system and '"expression"' in system and backend.sent[0]["stop"] == ["Observation:"]
    last = backend.sent[-1]["messages"]
    assert last[2]["content"] == "I should just guess." and last[3]["content"].startswith("Observation: Your reply could not be used")
    assert {"role": "user", "content": "Observation: 42"} in last
    assert not any("made up" in m["content"] for m in last)
    assert result.usage == Usage(60, 30) and result.steps[2].thought == "compute"


def test_native_loop_runs_tools_and_answers():
    script = [[("calculator", {"expression": "17*23"}), ("lookup", {"city": "Oslo"}), ("fail", {"reason": "boom"})],
              "CALL nothing({})", "", "391, and 709000 people."]
    backend = Scripted(script)
    result = Agent(backend, [calculator, lookup, fail], max_steps=5).run("Q?")
    assert result.answer == "391, and 709000 people." and [s.kind for s in result.steps] == ["tool", "invalid", "invalid", "final"]
    observations = [c["observation"] for c in result.steps[0].calls]
    assert observations == ["391", "709000", "error: RuntimeError: boom"]
    sent = backend.sent[1]["messages"]
    assert sent[2]["role"] == "assistant" and [c["function"]["name"] for c in sent[2]["tool_calls"]] == ["calculator", "lookup", "fail"]
    assert [m["content"] for m in sent[3:6]] == observations and sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]
    assert {t["function"]["name"] for t in backend.sent[0]["tools"]} == {"calculator", "lookup", "fail"}
    assert "no tool 'nothing'" in result.steps[1].observation and "empty" in result.steps[2].observation


def test_limits_stop_the_loop():
    endless = Scripted(["Thought: hmm"] * 10, capabilities=frozenset())
    result = Agent(endless, [calculator], mode="react", max_steps=3).run("Q?")
    assert result.stopped == "max_steps" and result.answer is None and len(result.steps) == 3
    slow = Scripted(["Thought: hmm"] * 10, capabilities=frozenset(), delay=0.05)
    result = Agent(slow, [calculator], mode="react", max_steps=10, max_time=0.01).run("Q?")
    assert result.stopped == "max_time" and len(result.steps) == 1
    with pytest.raises(ConfigError, match="native tool calling"):
        Agent(Scripted([], capabilities=frozenset()), [calculator], mode="native")
    with pytest.raises(ConfigError, match="max_steps"):
        Agent(endless, [calculator], max_steps=0)
    with pytest.raises(ConfigError, match="constrained decoding"):
        Agent(endless, [calculator], mode="react", tool_choice="required")


def test_parse_react():
    turn = parse_react('Thought: sum\nAction: calculator\nAction Input: {"expression": "1+1"} trailing\nObservation: 3')
    assert turn.thought == "sum" and turn.action == ("calculator", '{"expression": "1+1"}') and turn.answer is None
    assert parse_react("Final Answer: 7\nAction: x\nAction Input: {}").answer == "7"
    assert parse_react("Action: calculator\nAction Input: 2+2\nmore").action == ("calculator", "2+2")


def add(a: int = Field(ge=0, le=50), b: int = Field(ge=0, le=50)) -> int:
    """Add two small numbers."""
    return a + b


def test_native_loop_on_a_local_model_with_a_forced_first_call(traces):
    agent = Agent(LocalBackend(random_run()), [add], mode="native", tool_choice="required", max_steps=2, max_tokens=40)
    result = agent.run("What is 2 + 3?")
    call = result.steps[0].calls[0]
    arguments = json.loads(call["arguments"])
    assert call["name"] == "add" and call["ok"] and call["observation"] == str(arguments["a"] + arguments["b"])
    assert result.messages[3] == {"role": "tool", "tool_call_id": result.messages[2]["tool_calls"][0]["id"],
                                  "content": call["observation"]}
    # One trace: the agent, its steps, and under step 1 the model call and the tool call.
    spans = traces.trace(result.trace_id)
    by_id = {s.span_id: s for s in spans}
    names = {s.name: by_id[s.parent_id].name if s.parent_id else None for s in spans}
    assert names["invoke_agent agent"] is None and names["step 1"] == "invoke_agent agent"
    assert names["execute_tool add"] == "step 1" and by_id[next(s.parent_id for s in spans if s.name.startswith("chat "))].name == "step 1"


def test_constrained_react_on_a_local_model_always_writes_a_usable_action():
    agent = Agent(LocalBackend(random_run()), [add], mode="react", tool_choice="required", max_steps=2, max_tokens=48,
                  temperature=1.0, seed=0)
    result = agent.run("What is 2 + 3?")
    first = result.steps[0]
    assert first.kind == "tool" and first.text.startswith("Action: add\nAction Input: {")  # forced: no thought
    arguments = json.loads(first.calls[0]["arguments"])
    assert first.calls[0]["observation"] == str(arguments["a"] + arguments["b"])
    assert result.messages[3] == {"role": "user", "content": f"Observation: {first.calls[0]['observation']}"}


def test_native_loop_over_http_against_groklm_serve():
    remote = OpenAIBackend(spam_server().url + "/v1")
    result = Agent(remote, [lookup], tool_choice="required", max_steps=2, max_tokens=40).run("How many people live in Oslo?")
    call = result.steps[0].calls[0]
    assert call["name"] == "lookup" and call["observation"] == lookup(json.loads(call["arguments"])["city"])
    assert result.messages[3]["role"] == "tool" and len(result.steps) >= 2  # the server took the tool message


def test_agent_command_prints_the_steps(capsys):
    main(["agent", "--backend", f"local:{random_run()}", "--mode", "react", "--max-steps", "2", "--max-tokens", "16",
              "What is 6 * 7?"])
    out = capsys.readouterr()
    assert "step 1" in out.out and "step 2" in out.out and "no answer (stopped: max_steps)" in out.out
    assert "agent (react)" in out.err and "groklm traces show" in out.err
