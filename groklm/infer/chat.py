"""`groklm chat`: talk to a run in the terminal, one line per message, replies streamed.

The conversation is a message list rendered each turn in the run's chat format (its own template,
or ChatML); the model continues the open assistant turn until one of its stop tokens (ChatML:
<|im_end|>) or max_new_tokens. Commands:

    /reset         forget the conversation (the system message stays)
    /system TEXT   set the system message (an empty TEXT removes it)
    /quit          leave (so does end of input, Ctrl-D)

Input is read line by line from stdin, so a script can pipe a conversation in:
    printf 'hi\\n/quit\\n' | groklm chat runs/sft
When the prompt no longer fits the context (block_size minus room for the reply), the oldest
turns are dropped, never the system message, and a note says so.
"""

from __future__ import annotations

import sys
from typing import Iterable, TextIO

from groklm.infer.engine import DEFAULT_CACHE_MB, Engine, SamplingParams
from groklm.tokenizer.chat import render_prompt

HELP = "commands: /reset, /system TEXT, /quit"


def fit_context(tokenizer, messages: list[dict], budget: int) -> tuple[list[dict], list[int], int]:
    """Drop the oldest non-system messages until the rendered prompt has at most `budget`
    tokens (the latest message always stays). Returns (kept messages, prompt ids, dropped count)."""
    messages, dropped = list(messages), 0
    while True:
        ids = render_prompt(tokenizer, messages)
        turns = [i for i, m in enumerate(messages) if m["role"] != "system"]
        if len(ids) <= budget or len(turns) <= 1:
            return messages, ids, dropped
        del messages[turns[0]]
        dropped += 1


def stream_reply(engine, ids: list[int], out: TextIO, params) -> str:
    """Sample a reply to prompt `ids` with the inference engine, writing its text to `out` as it
    comes (whole characters only); returns the text."""
    reply = []
    for delta in engine.stream(ids, params):
        reply.append(delta.text)
        out.write(delta.text)
        out.flush()
    out.write("\n")
    out.flush()
    return "".join(reply)


def chat_loop(model, tokenizer, lines: Iterable[str], out: TextIO | None = None, err: TextIO | None = None,
              system: str | None = None, temperature: float = 0.8, top_k: int | None = None,
              top_p: float | None = None, max_new_tokens: int = 256, seed: int | None = None,
              cache_mb: float | None = DEFAULT_CACHE_MB, prefix_cache: bool = True) -> list[dict]:
    """Run a conversation over `lines` (user messages and commands); returns the final history."""
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p or 1.0).validate()
    engine = Engine(model, tokenizer, max_batch=1, cache_mb=cache_mb, prefix_cache=prefix_cache)  # earlier turns: a cached prefix
    out, err = out or sys.stdout, err or sys.stderr
    context = engine.context  # the model's block_size, or less when the KV cache is smaller
    budget = max(1, context - max_new_tokens)
    head = [{"role": "system", "content": system}] if system else []
    messages = list(head)
    turn = 0
    for line in lines:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        if text.startswith("/"):
            command, _, argument = text.partition(" ")
            if command == "/quit":
                break
            if command == "/reset":
                messages = list(head)
                print("(conversation cleared)", file=err)
            elif command == "/system":
                head = [{"role": "system", "content": argument.strip()}] if argument.strip() else []
                messages = head + [m for m in messages if m["role"] != "system"]
                print(f"(system message {'set' if head else 'removed'})", file=err)
            else:
                print(f"unknown command {command}; {HELP}", file=err)
            continue
        messages.append({"role": "user", "content": text})
        messages, ids, dropped = fit_context(tokenizer, messages, budget)
        if dropped:
            print(f"(context full: dropped the {dropped} oldest message(s); the system message is kept)", file=err)
        if len(ids) >= context:  # one message longer than the whole context
            print(f"(the message is too long: only its last {context - 1} tokens are read)", file=err)
            ids = ids[-(context - 1):]
        params.seed = None if seed is None else seed + turn  # a new draw every turn, repeatable per run
        reply = stream_reply(engine, ids, out, params)
        messages.append({"role": "assistant", "content": reply})
        turn += 1
    return messages
