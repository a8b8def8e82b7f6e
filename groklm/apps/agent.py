"""Agents: a model that answers by calling tools in a loop until it knows the answer.

    agent = Agent(backend, tools=[calculator, get_weather], max_steps=8)
    result = agent.run("What is 17 * 23 + 4?")
    result.answer, result.steps, result.stopped, result.usage

Two loops, the same tools:

  react   (Yao et al., 2022) a plain-text protocol any instruction-following model can follow.
          The system prompt lists the tools and the format; each model turn ends at the
          "Observation:" it must not write itself:

              Thought: I need the product first.
              Action: calculator
              Action Input: {"expression": "17 * 23"}
              Observation: 391                       <- written by us, as the next user turn
              Thought: now add 4 ... Final Answer: 395

          On local and hf backends the turn can be constrained by a regular expression of
          exactly that format, with each tool's arguments matching its JSON schema, so even a
          small model cannot write an action we cannot read.
  native  the backend's own tool calling: OpenAI `tool_calls` answered by `tool` messages (on
          local and hf backends, groklm's CALL-line protocol, groklm.infer.tool_calls).

Both stop at a final answer, after `max_steps` model calls or `max_time` seconds. A reply we
cannot read (no action, an unknown tool, arguments that are not JSON) is not fatal: the
model is told what was wrong, as the observation, and tries again. Every step, its model
call and its tool calls are spans of one trace (groklm.apps.tracing).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from groklm.apps.backends import Backend, Usage
from groklm.apps.tools import Tool, as_tools, run_tool
from groklm.apps.tracing import span
from groklm.errors import ConfigError
from groklm.infer.schema_regex import schema_regex

MODES = ("auto", "react", "native")
OBSERVATION = "Observation:"
REACT_FORMAT = """Use this format:
Thought: what to do next
Action: one tool name, exactly as listed
Action Input: the tool's arguments as a JSON object
Then stop: the Observation (the tool's result) is written for you. Repeat as needed, and end with:
Thought: I know the answer
Final Answer: the answer"""
ACTION_RE = re.compile(r"Action:[ \t]*([^\n]+?)[ \t]*\n\s*Action Input:[ \t]*(.*)", re.DOTALL)
FINAL_RE = re.compile(r"Final Answer:\s*(.*)", re.DOTALL)
NEXT_KEYWORD = re.compile(r"\n\s*(Thought|Action|Action Input|Observation):")


@dataclass
class Step:
    number: int
    kind: str  # "tool": tools were called; "final": the answer; "invalid": a reply we could not use
    text: str  # what the model wrote
    thought: str = ""
    calls: list[dict] = field(default_factory=list)  # {"name", "arguments", "observation", "ok"}
    observation: str | None = None  # for "invalid": what the model was told
    answer: str | None = None  # for "final"
    usage: Usage = field(default_factory=Usage)
    duration_s: float = 0.0


@dataclass
class AgentResult:
    answer: str | None  # None when the agent stopped before answering
    stopped: str  # "answer", "max_steps" or "max_time"
    steps: list[Step]
    messages: list[dict]  # the whole conversation
    usage: Usage = field(default_factory=Usage)
    trace_id: str | None = None


class Agent:
    def __init__(self, backend: Backend, tools: Iterable[Callable | Tool] = (), mode: str = "auto",
                 max_steps: int = 8, max_time: float = 120.0, system: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, constrain: bool | None = None, tool_choice: str = "auto",
                 seed: int | None = None, name: str = "agent"):
        if mode not in MODES:
            raise ConfigError(f"unknown agent mode {mode!r}; modes are {', '.join(MODES)}")
        if tool_choice not in ("auto", "required"):
            raise ConfigError(f"tool_choice must be 'auto' or 'required' (the first step calls a tool), got {tool_choice!r}")
        if max_steps < 1 or max_time <= 0:
            raise ConfigError("max_steps must be >= 1 and max_time > 0")
        self.backend = backend
        self.tools = as_tools(tools)
        self.mode = ("native" if "tools" in backend.capabilities else "react") if mode == "auto" else mode
        if self.mode == "native" and "tools" not in backend.capabilities:
            raise ConfigError(f"the {backend.kind} backend has no native tool calling; use mode='react'")
        self.constrain = ("grammar" in backend.capabilities) if constrain is None else constrain
        self.max_steps, self.max_time = max_steps, max_time
        self.system, self.max_tokens, self.temperature, self.name = system, max_tokens, temperature, name
        self.tool_choice, self.seed = tool_choice, seed
        if tool_choice == "required" and not self.tools:
            raise ConfigError("tool_choice 'required' needs at least one tool")
        if tool_choice == "required" and self.mode == "react" and not self.constrain:
            raise ConfigError("tool_choice 'required' in react mode needs constrained decoding (a local or hf backend)")

    # ---- the loop ---------------------------------------------------------------------------------

    def run(self, question: str, on_step: Callable[[Step], None] | None = None) -> AgentResult:
        start = time.monotonic()
        messages = self._start(question)
        steps: list[Step] = []
        answer, stopped = None, "max_steps"
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.name,
                      "gen_ai.request.model": self.backend.model, "groklm.agent.mode": self.mode}
        with span(f"invoke_agent {self.name}", attributes) as root:
            for number in range(1, self.max_steps + 1):
                if time.monotonic() - start > self.max_time:
                    stopped = "max_time"
                    break
                with span(f"step {number}", {"groklm.step": number}) as step_span:
                    t0 = time.monotonic()
                    step = self._react_step(number, messages) if self.mode == "react" else self._native_step(number, messages)
                    step.duration_s = time.monotonic() - t0
                    step_span.update({"groklm.step.kind": step.kind})
                steps.append(step)
                if on_step:
                    on_step(step)
                if step.kind == "final":
                    answer, stopped = step.answer, "answer"
                    break
            usage = sum((s.usage for s in steps), Usage())
            root.update({"groklm.stopped": stopped, "groklm.steps": len(steps), "gen_ai.usage.input_tokens": usage.input_tokens,
                         "gen_ai.usage.output_tokens": usage.output_tokens})
        return AgentResult(answer, stopped, steps, messages, usage, root.trace_id)

    def _start(self, question: str) -> list[dict]:
        system = self.system or "Answer the user's question. Use the tools when they help."
        if self.mode == "react":
            system += "\n\n" + self.react_instructions()
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    # ---- native tool calls ----------------------------------------------------------------------

    def _sampling(self, number: int) -> dict:
        """A new draw every step, repeatable when the agent has a seed."""
        seed = None if self.seed is None else self.seed + number
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": seed}

    def _forced(self, number: int) -> bool:
        """tool_choice "required" forces a tool call in the first step only: after that the
        model must be free to answer, or the loop could never end."""
        return self.tool_choice == "required" and number == 1

    def _native_step(self, number: int, messages: list[dict]) -> Step:
        reply = self.backend.chat(messages, tools=[t.spec() for t in self.tools.values()],
                                  tool_choice="required" if self._forced(number) else None, **self._sampling(number))
        step = Step(number, "tool", reply.text, usage=reply.usage)
        if reply.tool_calls:
            messages.append(reply.message())
            step.thought = reply.text
            for call in reply.tool_calls:
                result = run_tool(self.tools, call.name, call.arguments, call.id)
                step.calls.append({"name": call.name, "arguments": call.arguments, "observation": result.content, "ok": result.ok})
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
            return step
        problem = unreadable_call(reply.text, self.tools) if reply.text.strip() else "the reply was empty"
        if problem:
            return self._invalid(step, messages, problem)
        messages.append({"role": "assistant", "content": reply.text})
        step.kind, step.answer = "final", reply.text.strip()
        return step

    # ---- ReAct --------------------------------------------------------------------------------------

    def react_instructions(self) -> str:
        lines = ["You can use these tools:"]
        for tool in self.tools.values():
            schema = json.dumps(tool.parameters, separators=(",", ":"))
            lines.append(f"{tool.name}: {tool.description} Arguments: {schema}")
        return "\n".join(lines) + "\n\n" + REACT_FORMAT

    def react_regex(self, forced: bool = False) -> str:
        """One ReAct turn, exactly: a thought line, then an action with schema-valid arguments
        or a final answer. Forced (tool_choice "required"): just the action, as a forced native
        call has no text either. (Lines are not length-bounded: a counted repeat of "any
        character" multiplies the automaton's states, and its index took minutes to build;
        max_tokens bounds the turn instead.)"""
        line = "[^\\n]+"
        actions = [f"Action: {re.escape(t.name)}\\nAction Input: ({schema_regex(t.parameters)})" for t in self.tools.values()]
        if forced:
            return "(" + "|".join(actions) + ")"
        return f"Thought: {line}\\n(" + "|".join([*actions, f"Final Answer: {line}"]) + ")"

    def _react_step(self, number: int, messages: list[dict]) -> Step:
        if self.constrain:
            options = {"regex": self.react_regex(forced=self._forced(number))}
        else:
            options = {"stop": [OBSERVATION]}
        reply = self.backend.chat(messages, **self._sampling(number), **options)
        text = reply.text.rstrip()
        step = Step(number, "tool", text, usage=reply.usage)
        parsed = parse_react(text)
        step.thought = parsed.thought
        if parsed.answer is not None:
            messages.append({"role": "assistant", "content": text})
            step.kind, step.answer = "final", parsed.answer
            return step
        if parsed.action is None:
            return self._invalid(step, messages, "no 'Action:' with an 'Action Input:', and no 'Final Answer:'")
        name, arguments = parsed.action
        result = run_tool(self.tools, name, react_arguments(arguments, self.tools.get(name)))
        step.calls.append({"name": name, "arguments": arguments, "observation": result.content, "ok": result.ok})
        messages.append({"role": "assistant", "content": text[: parsed.end]})  # what it wrote past the action is dropped
        messages.append({"role": "user", "content": f"{OBSERVATION} {result.content}"})
        return step

    def _invalid(self, step: Step, messages: list[dict], problem: str) -> Step:
        """Tell the model what was wrong, as the observation, so that it can try again."""
        step.kind = "invalid"
        how = REACT_FORMAT if self.mode == "react" else "Call a tool, or give the final answer as plain text."
        step.observation = f"Your reply could not be used: {problem}. {how}"
        messages.append({"role": "assistant", "content": step.text or "(empty)"})
        messages.append({"role": "user", "content": f"{OBSERVATION} {step.observation}" if self.mode == "react" else step.observation})
        return step


@dataclass
class ReactTurn:
    thought: str
    answer: str | None = None  # the Final Answer, if the turn gives one (before any action)
    action: tuple[str, str] | None = None  # (tool name, Action Input text)
    end: int = 0  # where the action's input ends in the text


def parse_react(text: str) -> ReactTurn:
    """Read one ReAct turn. The Action Input is one JSON value when it starts like one (a model
    may go on to invent the observation; that part is ignored), else the rest of its line."""
    final, action = FINAL_RE.search(text), ACTION_RE.search(text)
    first = min((m.start() for m in (final, action) if m), default=len(text))
    turn = ReactTurn(re.sub(r"^\s*Thought:", "", text[:first]).strip())
    if final and (not action or final.start() < action.start()):
        answer = final.group(1)
        more = NEXT_KEYWORD.search(answer)  # a model that goes on with another turn: not the answer
        turn.answer = (answer[: more.start()] if more else answer).strip()
        return turn
    if action:
        start = action.start(2)
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline
        if text.startswith("{", start):
            try:
                _, end = json.JSONDecoder().raw_decode(text, start)
            except json.JSONDecodeError:
                pass
        turn.action, turn.end = (action.group(1).strip(), text[start:end].strip()), end
    return turn


def react_arguments(text: str, tool: Tool | None) -> str | dict:
    """Action Input as the tool's arguments: a JSON object, or for a one-argument tool the bare
    value (`Action Input: 17*3` for the calculator)."""
    try:
        json.loads(text)
        return text
    except json.JSONDecodeError:
        names = list(tool.parameters.get("properties") or {}) if tool else []
        return {names[0]: text.strip('"')} if len(names) == 1 and text else text


def unreadable_call(text: str, tools: dict[str, Tool]) -> str | None:
    """Why a reply that looks like a tool call (a CALL line) did not become one, else None."""
    for line in text.splitlines():
        if line.strip().startswith("CALL "):
            name = line.strip()[5:].split("(", 1)[0].strip()
            if name not in tools:
                return f"there is no tool {name!r}; the tools are {', '.join(tools) or '(none)'}"
            return f"the call {line.strip()[:80]!r} is not CALL {name}({{...JSON arguments...}})"
    return None
