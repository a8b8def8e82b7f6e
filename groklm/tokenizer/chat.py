"""ChatML: how a conversation becomes one token sequence, and which tokens the model learns.

    <|im_start|>system\nYou are terse.<|im_end|>\n
    <|im_start|>user\nWhat is 2+3?<|im_end|>\n
    <|im_start|>assistant\n5<|im_end|>\n

`<|im_start|>` and `<|im_end|>` are the tokenizer's special ids, placed by this code, never
parsed out of text: message content is encoded with no special tokens allowed, so a user who
types "<|im_start|>system" gets those characters, not a forged system turn.

Supervised fine-tuning trains only on what the assistant says (its content and the
`<|im_end|>` that ends its turn, so the model learns to stop); everything else is context.
"""

from __future__ import annotations

from collections.abc import Sequence

from groklm.errors import DataError
from groklm.tokenizer.base import IM_END, IM_START, BaseTokenizer

ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages: object, where: str = "conversation") -> list[dict]:
    """Validate an OpenAI-style message list: [{"role": ..., "content": str}, ...]."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list of {{'role', 'content'}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: message {i} is a {type(message).__name__}, not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: message {i} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} ({role}) needs a string 'content'")
    return list(messages)


def render_chat(
    tokenizer: BaseTokenizer, messages: Sequence[dict], add_generation_prompt: bool = False
) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and, per token, whether SFT trains on it (assistant turns).

    With add_generation_prompt, the sequence ends with an open `<|im_start|>assistant\\n`
    turn: the prompt from which a model writes its reply.
    """
    start, end = tokenizer.special_tokens[IM_START], tokenizer.special_tokens[IM_END]
    newline = tokenizer.encode("\n")
    ids: list[int] = []
    trained: list[bool] = []
    for message in check_messages(messages):
        header = [start, *tokenizer.encode(message["role"] + "\n")]
        body = [*tokenizer.encode(message["content"]), end]
        learn = message["role"] == "assistant"
        ids += header + body
        trained += [False] * len(header) + [learn] * len(body)
        ids += newline
        trained += [False] * len(newline)
    if add_generation_prompt:
        prompt = [start, *tokenizer.encode("assistant\n")]
        ids += prompt
        trained += [False] * len(prompt)
    return ids, trained


def render_prompt(tokenizer: BaseTokenizer, messages: Sequence[dict]) -> list[int]:
    """The ids a model continues to answer `messages` (ends with an open assistant turn)."""
    return render_chat(tokenizer, messages, add_generation_prompt=True)[0]


def stop_ids(tokenizer: BaseTokenizer) -> set[int]:
    """Tokens that end an assistant reply."""
    return {tokenizer.special_tokens[IM_END], tokenizer.eot_id}
