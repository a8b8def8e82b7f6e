"""Backends: one way for applications to talk to a model, wherever the model runs.

    backend = load_backend("local:runs/chat")                          # a groklm run, our Engine
    backend = load_backend("hf:path/to/checkpoint")                    # a transformers directory
    backend = load_backend("openai:http://127.0.0.1:8000/v1#my-model")  # any OpenAI-compatible API
    reply = backend.chat([{"role": "user", "content": "Hi"}], max_tokens=32)
    reply.text, reply.usage, reply.finish_reason, reply.logprobs, reply.tool_calls

Every backend offers the same calls:

    chat(messages, **options) -> Reply      one reply; options below
    stream(messages, **options) -> text pieces as they are generated
    count_tokens(messages) -> int | None    prompt length (None: only the server knows)
    score(messages, replies) -> [log p(reply | messages)]   where the model's logits are at hand

and says what else it can do in `capabilities`:

    grammar    json_schema / regex constraints enforced while decoding (local; hf when its
               tokenizer.json can be read as a byte-level BPE); numeric bounds included
               (groklm.infer.schema_regex)
    json_schema  json_schema passed to the server as response_format (openai)
    tools      OpenAI-style tools and tool_calls
    logprobs   per-token log-probabilities (openai: if the server returns them)
    score      `score()`: exact log-probabilities of given replies (local, hf)

Options: max_tokens, temperature (default 0: greedy, so apps are repeatable), top_p, seed,
stop (strings), logprobs (None, or k: each token's logprob and the k most likely others),
json_schema, regex, tools (OpenAI tool dicts), tool_choice.

Tools on local and hf backends use groklm's plain-text protocol (groklm.infer.tool_calls): the
tools are described in the system message and the model writes `CALL name({...})` lines, which
come back as `tool_calls`. Every call is a tracing span (groklm.apps.tracing).

API keys never go in the spec string (it ends up in shell history and traces): the openai
backend reads $OPENAI_API_KEY, or takes `api_key=` in code.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from groklm.infer.schema_regex import fill, schema_regex, with_placeholders
from groklm.apps.tracing import clip, messages_attribute, span
from groklm.errors import CheckpointError, ConfigError, GroklmError
from groklm.infer.tool_calls import (
    ToolCall,
    call_regex,
    check_tools,
    parse_reply,
    pick_tools,
    to_chatml,
)

KINDS = ("local", "hf", "openai")


class BackendError(GroklmError):
    """A backend that could not answer: an HTTP error, a refused connection, a bad reply."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class Logprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] | None = None  # the most likely tokens at this step, with their logprobs


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop", "length" or "tool_calls"
    usage: Usage
    model: str
    logprobs: list[Logprob] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    latency_s: float = 0.0

    def message(self) -> dict:
        """The reply as an OpenAI assistant message, to append to the conversation."""
        if self.tool_calls:
            calls = [call.to_openai() for call in self.tool_calls]
            return {"role": "assistant", "content": self.text or None, "tool_calls": calls}
        return {"role": "assistant", "content": self.text}


@dataclass
class ChatOptions:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    json_schema: dict | None = None
    regex: str | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None

    def __post_init__(self):
        if self.json_schema is not None and self.regex is not None:
            raise ConfigError("give json_schema or regex, not both")
        if (self.json_schema is not None or self.regex is not None) and self.tools:
            raise ConfigError("a reply constrained to a schema or regex cannot also call tools")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])

    def sampling(self):
        """The engine's SamplingParams (validated: ranges, stop strings, logprobs)."""
        from groklm.infer.engine import SamplingParams

        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed, stop=self.stop, logprobs=self.logprobs).validate()


class Backend(ABC):
    """The protocol every backend implements; `chat` and `stream` add the tracing span."""

    kind: str = ""
    provider: str = ""  # gen_ai.provider.name
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: str):
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    def chat(self, messages: Sequence[dict], **options) -> Reply:
        opts = self._options(options)
        with span(f"chat {self.model}", self._request_attributes(messages, opts)) as s:
            start = time.perf_counter()
            reply = self._chat(list(messages), opts)
            reply.latency_s = time.perf_counter() - start
            output = {"role": "assistant", "content": clip(reply.text)}
            if reply.tool_calls:
                output["tool_calls"] = [call.to_openai() for call in reply.tool_calls]
            s.update({
                "gen_ai.response.model": reply.model,
                "gen_ai.response.finish_reasons": [reply.finish_reason],
                "gen_ai.usage.input_tokens": reply.usage.input_tokens,
                "gen_ai.usage.output_tokens": reply.usage.output_tokens,
                "gen_ai.output.messages": json.dumps([output], ensure_ascii=False),
            })
        return reply

    def stream(self, messages: Sequence[dict], **options) -> Iterator[str]:
        opts = self._options(options)
        if opts.tools:
            raise ConfigError("stream() returns text; use chat() for replies that may call tools")
        # Not the parent of anything, and a generator may be finished from another context.
        with span(f"chat {self.model}", {**self._request_attributes(messages, opts), "groklm.stream": True},
                  activate=False) as s:
            pieces = []
            for piece in self._stream(list(messages), opts):
                pieces.append(piece)
                yield piece
            s.update({"gen_ai.output.messages": json.dumps([{"role": "assistant", "content": clip("".join(pieces))}])})

    def _options(self, options: dict) -> ChatOptions:
        unknown = set(options) - {f.name for f in fields(ChatOptions)}
        if unknown:
            raise ConfigError(f"unknown chat option(s) {', '.join(sorted(unknown))}; "
                              f"options are {', '.join(f.name for f in fields(ChatOptions))}")
        opts = ChatOptions(**options)
        self._check(opts)
        return opts

    def _check(self, opts: ChatOptions) -> None:
        constrained = opts.json_schema is not None or opts.regex is not None
        if opts.regex is not None and "grammar" not in self.capabilities:
            raise ConfigError(f"the {self.kind} backend cannot enforce a regex; use a local or hf backend")
        if constrained and not {"grammar", "json_schema"} & self.capabilities:
            raise ConfigError(f"the {self.kind} backend {self.model} cannot constrain its output to a JSON schema")
        if opts.tools and "tools" not in self.capabilities:
            raise ConfigError(f"the {self.kind} backend {self.model} cannot call tools")

    def _request_attributes(self, messages: Sequence[dict], opts: ChatOptions) -> dict:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": opts.max_tokens,
            "gen_ai.request.temperature": opts.temperature,
            "gen_ai.request.top_p": opts.top_p,
            "gen_ai.request.seed": opts.seed,
            "gen_ai.output.type": "json" if opts.json_schema is not None else "text",
            "gen_ai.input.messages": messages_attribute(list(messages)),
            "groklm.tools": [t.get("function", {}).get("name") for t in opts.tools] if opts.tools else None,
        }

    @abstractmethod
    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply: ...

    @abstractmethod
    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]: ...

    def count_tokens(self, messages: Sequence[dict]) -> int | None:
        """Tokens in the prompt these messages make (None when only the server can tell)."""
        return None

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
        """log p(reply | messages) for each reply, as the assistant's whole turn."""
        raise ConfigError(f"the {self.kind} backend cannot score replies (it has no logits at hand)")


# ---- local: a groklm run on our Engine ------------------------------------------------------------


class LocalBackend(Backend):
    """A groklm run directory served by groklm.infer.engine.Engine in this process."""

    kind, provider = "local", "groklm"
    capabilities = frozenset({"grammar", "tools", "logprobs", "score"})

    def __init__(self, run_dir: str | os.PathLike | None = None, device: str = "cpu", engine=None, name: str | None = None):
        from groklm.infer.engine import Engine

        if engine is None and run_dir is None:
            raise ConfigError("LocalBackend needs a run directory (or an Engine)")
        self.engine = engine if engine is not None else Engine.from_run(run_dir, device=device, max_batch=1)
        super().__init__(name or str(run_dir or "engine"))

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def _prepare(self, messages: list[dict], opts: ChatOptions):
        """(prompt ids, grammar or None, the tools a reply may call)."""
        from groklm.tokenizer.chat import render_prompt

        tools = callable_tools(opts)
        prompt = render_prompt(self.tokenizer, to_chatml(messages, tools))
        return prompt, grammar_for(opts, tools, self.tokenizer), tools

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        prompt, grammar, tools = self._prepare(messages, opts)
        [done] = self.engine.generate([prompt], opts.sampling(), constraints=grammar)
        logprobs = [Logprob(lp.token, lp.logprob, lp.top) for lp in done.logprobs] if done.logprobs else None
        return finish_reply(done.text, done.finish_reason, Usage(done.prompt_tokens, done.completion_tokens),
                            self.model, logprobs, tools)

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        prompt, grammar, _ = self._prepare(messages, opts)
        for delta in self.engine.stream(prompt, opts.sampling(), grammar):
            if delta.text:
                yield delta.text

    def count_tokens(self, messages: Sequence[dict]) -> int:
        from groklm.tokenizer.chat import render_prompt

        return len(render_prompt(self.tokenizer, to_chatml(list(messages))))

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
        from groklm.eval.harness import choice_logprobs

        return choice_logprobs(self.engine.model, self.tokenizer, to_chatml(list(messages)), list(replies)).tolist()


def callable_tools(opts: ChatOptions) -> list:
    """The tools (groklm.infer.tool_calls.Tool) a reply may call under opts.tool_choice."""
    return pick_tools(check_tools(opts.tools), opts.tool_choice) if opts.tools else []


def grammar_for(opts: ChatOptions, tools: list, tokenizer):
    """The grammar the reply must follow (a JSON schema, a regex, or a forced tool call), or None.
    Properties keep the schema's order: the order the model writes them in."""
    from groklm.infer.constrain import Grammar

    if opts.json_schema is not None:
        pattern = schema_regex(opts.json_schema)
    elif opts.regex is not None:
        pattern = opts.regex
    elif tools and opts.tool_choice not in (None, "auto"):
        pattern = forced_call_regex(tools)
    else:
        return None
    return Grammar.from_regex(pattern, tokenizer)


def forced_call_regex(tools: list) -> str:
    """One call line to one of `tools` (tool_choice "required" or a named one), with the
    arguments' numeric bounds enforced too (groklm.infer.schema_regex)."""
    patterns: dict[str, str] = {}
    prepared = [replace(tool, parameters=with_placeholders(tool.parameters, patterns)[0]) for tool in tools]
    return fill(call_regex(prepared), patterns)


def finish_reply(text: str, finish_reason: str, usage: Usage, model: str, logprobs, tools) -> Reply:
    """A reply from generated text: with tools, CALL lines become tool calls."""
    if not tools:
        return Reply(text, finish_reason, usage, model, logprobs)
    content, calls = parse_reply(text, tools)
    return Reply(content or "", "tool_calls" if calls else finish_reason, usage, model, logprobs, calls)


# ---- hf: a transformers checkpoint directory --------------------------------------------------------

# ChatML, for checkpoints that have <|im_start|>/<|im_end|> but no chat template of their own
# (a run exported by `groklm export` is one): the same text groklm.tokenizer.chat renders.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class HFBackend(Backend):
    """A local Hugging Face `transformers` checkpoint (AutoModelForCausalLM + AutoTokenizer),
    decoded token by token here so that grammars, logprobs and stop strings work as on `local`.

    Constrained decoding needs our view of the vocabulary (each id's bytes); it is read from the
    directory's tokenizer.json when that is a byte-level BPE (GPT-2, Llama 3, Qwen, groklm
    exports). Other tokenizers (SentencePiece) get no "grammar" capability, and `extract` falls
    back to prompting with the schema and validating the parsed reply."""

    kind, provider = "hf", "transformers"

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        try:
            import transformers
        except ImportError:
            raise ConfigError("the hf backend needs the transformers package: pip install transformers") from None
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            config = None
        if not isinstance(config, dict) or "model_type" not in config:
            raise ConfigError(f"{path} is not a transformers checkpoint directory (no config.json with a model_type)")
        super().__init__(str(path))
        self.device = device
        try:
            self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.hf_model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"transformers cannot load {path}: {error}") from error
        vocab = self.hf_tokenizer.get_vocab()
        if not self.hf_tokenizer.chat_template:
            if "<|im_start|>" not in vocab or "<|im_end|>" not in vocab:
                raise ConfigError(f"{path} has no chat template and no ChatML tokens: cannot turn messages into a prompt")
            self.hf_tokenizer.chat_template = CHATML_TEMPLATE
        eos = self.hf_model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.end_ids = {i for i in eos + [self.hf_tokenizer.eos_token_id] if i is not None}
        self.end_ids |= {vocab[t] for t in END_OF_TURN if t in vocab}
        config = self.hf_model.config
        self.context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        self.vocab_size = len(self.hf_tokenizer)
        # The KV cache is `past_key_values` in transformers 4 and `cache` in 5.
        self.cache_arg = "cache" if "cache" in inspect.signature(self.hf_model.forward).parameters else "past_key_values"
        self.grammar_tokenizer = self._grammar_tokenizer(path)
        self.capabilities = frozenset({"tools", "logprobs", "score"} | ({"grammar"} if self.grammar_tokenizer else set()))

    def _grammar_tokenizer(self, path: Path):
        """Our Tokenizer over the same ids (for the grammar's token bytes), or None if unreadable."""
        from groklm.errors import TokenizerError
        from groklm.tokenizer.imports import from_hf_file

        try:
            ours = from_hf_file(path / "tokenizer.json")
        except (TokenizerError, OSError):
            return None
        probe = 'Tom is 34. {"a": [1, 2.5, "x"]}\n'
        ids = self.hf_tokenizer(probe, add_special_tokens=False)["input_ids"]
        return ours if ours.decode(ids) == probe and ours.encode(probe) == ids else None

    def _prompt(self, messages: list[dict]) -> list[int]:
        text = self.hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= self.context:
            raise ConfigError(f"the prompt is {len(ids)} tokens; {self.model}'s context is {self.context}")
        return ids

    def _generate(self, messages: list[dict], opts: ChatOptions, tools, run: Generation) -> Iterator[tuple[str, Logprob | None]]:
        """(new text, logprob) per generated token, until an end-of-turn token or the limit;
        `run` receives the prompt length, the token count and the finish reason."""
        import torch

        from groklm.infer.sampling import sample_next

        params = opts.sampling()
        prompt = self._prompt(to_chatml(messages, tools))
        grammar = grammar_for(opts, tools, self.grammar_tokenizer) if self.grammar_tokenizer is not None else None
        state = grammar.start() if grammar is not None else None
        generator = torch.Generator().manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        run.prompt_tokens = len(prompt)
        generated: list[int] = []
        shown = ""
        past, feed = None, torch.tensor([prompt], device=self.device)
        with torch.no_grad():
            for _ in range(min(params.max_tokens, self.context - len(prompt))):
                out = self.hf_model(input_ids=feed, use_cache=True, **{self.cache_arg: past})
                past = out[self.cache_arg]
                logits = out.logits[0, -1, : self.vocab_size].float()
                if state is not None:
                    logits = logits.masked_fill(~self._allowed(state, logits.device), float("-inf"))
                token = int(sample_next(logits[None], params.temperature, None, params.top_p, generator))
                logprob = self._logprob(logits, token, params.logprobs) if params.logprobs is not None else None
                run.tokens += 1
                if token in self.end_ids:
                    run.finish = "stop"
                    break
                if state is not None:
                    state.advance(token)
                generated.append(token)
                feed = torch.tensor([[token]], device=self.device)
                text = self.hf_tokenizer.decode(generated)
                if text.endswith("\ufffd"):  # maybe a character cut in half: wait for its other bytes
                    yield "", logprob
                    continue
                yield text[len(shown):], logprob
                shown = text
            else:
                run.finish, logprob = "length", None
        # The end: text still held (bytes that never became a character show as U+FFFD, as in
        # the engine), and the end-of-turn token's logprob (a token of the reply, not text).
        yield self.hf_tokenizer.decode(generated)[len(shown):], logprob

    def _allowed(self, state, device):
        """The tokens the grammar allows next, over the model's ids; a complete reply may end
        with the model's own end-of-turn tokens."""
        import torch

        allowed = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        mask = state.allowed(self.grammar_tokenizer.vocab_size, device)[: self.vocab_size]
        allowed[: mask.numel()] = mask
        if state.complete:
            allowed[sorted(i for i in self.end_ids if i < self.vocab_size)] = True
        return allowed

    def _logprob(self, logits, token: int, top: int) -> Logprob:
        import torch.nn.functional as F

        logp = F.log_softmax(logits, dim=-1)
        alternatives = None
        if top:
            values, ids = logp.topk(min(top, logp.numel()))
            alternatives = [(self.hf_tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]
        return Logprob(self.hf_tokenizer.decode([token]), float(logp[token]), alternatives)

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        tools = callable_tools(opts)
        run = Generation()
        text, logprobs = "", []
        for piece, logprob in self._generate(messages, opts, tools, run):
            text += piece
            if logprob is not None:
                logprobs.append(logprob)
            cut = first_stop(text, opts.stop)
            if cut is not None:
                text, run.finish = text[:cut], "stop"
                break
        usage = Usage(run.prompt_tokens, run.tokens)
        return finish_reply(text, run.finish, usage, self.model, logprobs if opts.logprobs is not None else None, tools)

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        held = ""  # the tail that may be the start of a stop string
        keep = max((len(s) for s in opts.stop), default=1) - 1
        for piece, _ in self._generate(messages, opts, [], Generation()):
            held += piece
            cut = first_stop(held, opts.stop)
            if cut is not None:
                yield held[:cut]
                return
            if len(held) > keep:
                yield held[: len(held) - keep]
                held = held[len(held) - keep :]
        if held:
            yield held

    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(self._prompt(to_chatml(list(messages))))

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
        import torch
        import torch.nn.functional as F

        messages = to_chatml(list(messages))
        prompt = self._prompt(messages)
        scores = []
        for reply in replies:
            full_text = self.hf_tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": reply}], tokenize=False)
            full = self.hf_tokenizer(full_text, add_special_tokens=False)["input_ids"]
            if full[: len(prompt)] != prompt:
                raise ConfigError(f"{self.model}'s chat template does not extend the prompt with the reply; cannot score")
            continuation = full[len(prompt):]
            ends = [i for i, t in enumerate(continuation) if t in self.end_ids]
            continuation = continuation[: ends[0] + 1] if ends else continuation  # through the end of the turn
            ids = torch.tensor([prompt + continuation], device=self.device)
            with torch.no_grad():
                logp = F.log_softmax(self.hf_model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, len(prompt):]
            scores.append(float(logp[len(prompt) - 1 :].gather(1, targets[:, None]).sum()))
        return scores


@dataclass
class Generation:
    """What an HF generation loop reports besides its text."""

    prompt_tokens: int = 0
    tokens: int = 0
    finish: str = "length"


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string begins in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


# ---- openai: any OpenAI-compatible HTTP endpoint ----------------------------------------------------


class OpenAIBackend(Backend):
    """POST {base_url}/chat/completions with httpx: groklm serve, vLLM, llama.cpp, Ollama, OpenAI.

    json_schema goes out as response_format {"type": "json_schema", ...}; a server that rejects
    it makes `extract` fall back to prompting (see groklm.apps.structured)."""

    kind, provider = "openai", "openai"
    capabilities = frozenset({"json_schema", "tools", "logprobs"})

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, transport=None):
        import httpx

        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url + "/", headers=headers, timeout=timeout, transport=transport)
        super().__init__(model or self._first_model())

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise BackendError(f"{self.base_url}/{path}: {type(error).__name__}: {error}") from error
        if response.status_code >= 400:
            raise BackendError(f"{self.base_url}/{path} answered {response.status_code}: {error_text(response)}",
                               response.status_code)
        return response

    def _first_model(self) -> str:
        models = self._request("GET", "models").json().get("data") or []
        if not models:
            raise BackendError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
        return models[0]["id"]

    def _body(self, messages: list[dict], opts: ChatOptions, stream: bool) -> dict:
        body: dict = {"model": self.model, "messages": messages, "max_tokens": opts.max_tokens,
                      "temperature": opts.temperature, "top_p": opts.top_p}
        if opts.seed is not None:
            body["seed"] = opts.seed
        if opts.stop:
            body["stop"] = opts.stop
        if opts.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = opts.logprobs
        if opts.json_schema is not None:
            name = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(opts.json_schema.get("title", "reply")))
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name[:64] or "reply", "schema": opts.json_schema, "strict": True}}
        if opts.tools:
            body["tools"] = opts.tools
            if opts.tool_choice is not None:
                body["tool_choice"] = opts.tool_choice
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        data = self._request("POST", "chat/completions", json=self._body(messages, opts, False)).json()
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.base_url}/chat/completions sent a reply without choices: {str(data)[:200]}") from None
        calls = [ToolCall(c["function"]["name"], c["function"].get("arguments") or "{}", c.get("id") or f"call_{i}")
                 for i, c in enumerate(message.get("tool_calls") or [])]
        usage = data.get("usage") or {}
        logprobs = None
        if choice.get("logprobs") and choice["logprobs"].get("content") is not None:
            logprobs = [Logprob(t["token"], t["logprob"], [(a["token"], a["logprob"]) for a in t.get("top_logprobs") or []])
                        for t in choice["logprobs"]["content"]]
        return Reply(message.get("content") or "", choice.get("finish_reason") or "stop",
                     Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
                     data.get("model") or self.model, logprobs, calls)

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        import httpx

        body = self._body(messages, opts, True)
        try:
            with self.client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(f"{self.base_url}/chat/completions answered {response.status_code}: "
                                       f"{error_text(response)}", response.status_code)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:"):].strip()
                    if payload == "[DONE]":
                        return
                    for choice in json.loads(payload).get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as error:
            raise BackendError(f"{self.base_url}/chat/completions: {type(error).__name__}: {error}") from error


def error_text(response) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (ValueError, AttributeError):
        pass
    return response.text[:300]


# ---- choosing a backend by name -----------------------------------------------------------------------


def load_backend(spec: str | Backend, **kwargs) -> Backend:
    """`local:RUN`, `hf:DIR` or `openai:BASE_URL[#MODEL]` -> a Backend (a Backend passes through).

    Without #MODEL, the openai backend asks the server's /models and takes the first one."""
    if isinstance(spec, Backend):
        return spec
    kind, sep, rest = str(spec).partition(":")
    if not sep or kind not in KINDS or not rest:
        raise ConfigError(f"unknown backend {spec!r}: use local:RUN_DIR, hf:CHECKPOINT_DIR or openai:BASE_URL#MODEL")
    if kind == "local":
        return LocalBackend(rest, **kwargs)
    if kind == "hf":
        return HFBackend(rest, **kwargs)
    url, _, model = rest.partition("#")
    return OpenAIBackend(url, model or None, **kwargs)
