"""local: a groklm run directory, served by the inference engine in this process.

    backend = load_backend("local:runs/chat")
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from groklm.apps.backends.base import Backend, ChatOptions, Logprob, Reply, Usage, callable_tools, finish_reply
from groklm.apps.tracing import span
from groklm.errors import ConfigError
from groklm.infer.constrain import Grammar
from groklm.infer.engine import Engine
from groklm.infer.requests import reply_grammar
from groklm.infer.scoring import choice_logprobs
from groklm.infer.tool_calls import ToolSpec, to_chatml
from groklm.rundir import TOKENIZER_DIR
from groklm.tokenizer.chat import check_chat_template, render_prompt


class LocalBackend(Backend):
    """A groklm run directory served by groklm.infer.engine.Engine in this process."""

    kind, provider = "local", "groklm"
    capabilities = frozenset({"grammar", "tools", "logprobs", "score"})

    def __init__(self, run_dir: str | os.PathLike | None = None, device: str = "cpu", engine: Engine | None = None,
                 name: str | None = None, max_batch: int = 1):
        """max_batch: conversations decoded together by chat_many (one slot of KV cache each)."""
        if engine is None and run_dir is None:
            raise ConfigError("LocalBackend needs a run directory (or an Engine)")
        self.engine = engine if engine is not None else Engine.from_run(run_dir, device=device, max_batch=max_batch)
        check_chat_template(self.engine.tokenizer, f"{run_dir}/{TOKENIZER_DIR}/tokenizer.json" if run_dir else None)
        super().__init__(name or str(run_dir or "engine"))

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def _prepare(self, messages: list[dict], opts: ChatOptions) -> tuple[list[int], Grammar | None, list[ToolSpec]]:
        """(prompt ids, grammar or None, the tools a reply may call)."""
        tools = callable_tools(opts)
        prompt = render_prompt(self.tokenizer, to_chatml(messages, tools))
        grammar = reply_grammar(self.tokenizer, tools, opts.tool_choice, opts.json_schema, opts.regex)
        return prompt, grammar, tools

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        prompt, grammar, tools = self._prepare(messages, opts)
        [done] = self.engine.generate([prompt], opts.sampling(), constraints=grammar)
        return self._reply(done, tools)

    def chat_many(self, conversations: Sequence[Sequence[dict]], **options) -> list[Reply]:
        """One engine.generate call for all the conversations: the engine decodes up to max_batch
        of them together (continuous batching), so a batch costs little more than its longest reply."""
        opts = self._options(options)
        with span(f"chat {self.model}", {**self._request_attributes([], opts), "groklm.batch": len(conversations)}):
            prepared = [self._prepare(list(messages), opts) for messages in conversations]
            done = self.engine.generate([prompt for prompt, _, _ in prepared], opts.sampling(),
                                        constraints=[grammar for _, grammar, _ in prepared])
            return [self._reply(completion, tools) for completion, (_, _, tools) in zip(done, prepared)]

    def _reply(self, done, tools: list[ToolSpec]) -> Reply:
        logprobs = [Logprob(lp.token, lp.logprob, lp.top) for lp in done.logprobs] if done.logprobs else None
        return finish_reply(done.text, done.finish_reason, Usage(done.prompt_tokens, done.completion_tokens),
                            self.model, logprobs, tools)

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        prompt, grammar, _ = self._prepare(messages, opts)
        for delta in self.engine.stream(prompt, opts.sampling(), grammar):
            if delta.text:
                yield delta.text

    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(render_prompt(self.tokenizer, to_chatml(list(messages))))

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
        return choice_logprobs(self.engine.model, self.tokenizer, to_chatml(list(messages)), list(replies)).tolist()
