"""Inference: turning a model's logits into text, fast, for many users at once.

    from groklm.infer import Engine, SamplingParams
    engine = Engine.from_run("runs/chat")
    [reply] = engine.generate([prompt_ids], SamplingParams(max_tokens=64, temperature=0))

    decode.py        the reference decoder: one token at a time, no cache (any model with logits)
    engine.py        Engine (KV cache, continuous batching, streaming), AsyncEngine, sample_responses
    sampling.py      temperature, top-k, top-p
    stop_strings.py  holding back text that may begin a stop string
    scoring.py       log-probs of given sequences and choices
    constrain.py     Grammar: replies that match a regex or a JSON schema (schema_regex.py)
    requests.py      the grammar a chat request asks for (response_format, tool_choice)
    tool_calls.py    the tool-call protocol: OpenAI tools and messages <-> CALL lines
    chat.py          the terminal chat loop
"""

from __future__ import annotations

from groklm.infer.constrain import Grammar
from groklm.infer.decode import decode, generate
from groklm.infer.engine import AsyncEngine, Completion, Delta, Engine, EngineBusy, SamplingParams, sample_responses

__all__ = ["Engine", "AsyncEngine", "SamplingParams", "Completion", "Delta", "EngineBusy", "Grammar", "sample_responses",
           "decode", "generate"]
