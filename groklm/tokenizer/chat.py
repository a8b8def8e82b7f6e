"""Chat formats: how a conversation becomes one token sequence, and which tokens the model learns.

A tokenizer's conventions (tokenizer/base.py) say which format its model speaks:

- **ChatML**, groklm's own (`conventions.chat_template` is None and the tokenizer has the
  `<|im_start|>` and `<|im_end|>` special tokens):

      <|im_start|>system\\nYou are terse.<|im_end|>\\n
      <|im_start|>user\\nWhat is 2+3?<|im_end|>\\n
      <|im_start|>assistant\\n5<|im_end|>\\n

- **ChatML as text**, for a tokenizer with neither a template nor those tokens (a base model
  such as GPT-2, imported): the same markup spelled as ordinary text, except that an
  assistant turn ends with the eos token, which is also where a reply stops. (Markup that is
  text can be typed by a user; only the eos token cannot.)
- **The model's own Jinja template** (`conventions.chat_template`), rendered in a sandbox the
  way transformers renders it (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
  `strftime_now`, `tojson`; variables `messages`, `add_generation_prompt`, `bos_token`,
  `eos_token` and `tools`).

Three rules hold in every format:

1. **Prefix diffing.** A template is a function from a whole conversation to one string; it says
   nothing about which characters belong to which turn. So it is rendered for growing prefixes:
   messages[:i], then messages[:i] with the generation prompt when message i is the assistant's,
   then messages[:i+1]. Each rendering must extend the one before it (else a clear error: the
   template is not prefix-stable, and no exact loss mask exists); the difference between two
   renderings is what message i added. What an assistant turn adds after the generation prompt
   is exactly what the model must emit to write that turn.
2. **Segment tokenization.** Each difference is tokenized on its own, so the ids of a
   conversation are the ids of its prompt followed by the ids of the reply: a prompt rendered
   for generation is always a prefix of the same conversation rendered with its answer, and the
   reply the model learns is token for token the reply it is asked for at inference. (Tokenizing
   the whole string, as transformers does, agrees except where a token could span a boundary,
   e.g. a message that starts with a space after the template's newline.) Each piece is
   encoded as the continuation of the text before it (`encode_continuation`), so a
   SentencePiece-style tokenizer puts its "▁" prefix only where the whole text gets one.
3. **No injected turns.** Template text may contain the tokenizer's special tokens; message
   content never does: it is located in the rendering (by rendering the same prefix with a
   placeholder in its place) and encoded with no special tokens allowed, so a user who types
   "<|im_start|>system" gets those characters, not a forged system turn.

Supervised fine-tuning trains only on what the assistant emits: the text of its turn after the
generation prompt, up to and including the first stop token (`stop_ids`: the eos token, the
conventions' stop tokens, and `<|im_end|>` for ChatML), so the model learns to stop; the
whitespace a template adds after that token, and everything else, is context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from groklm.errors import ConfigError, DataError, TokenizerError
from groklm.tokenizer.base import IM_END, IM_START, BaseTokenizer

ROLES = ("system", "user", "assistant", "tool")

# The conversation check_chat_template renders; its replies are what a chat template must show.
PROBE = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is two plus three?"},
    {"role": "assistant", "content": "Two plus three is five."},
]
# Stands in for one message's content to find where the template puts it (private-use characters
# that no template mentions and that survive `trim`).
PLACEHOLDER = "\ue000groklm-content\ue001"

ALL = "all"  # template text: the tokenizer's special tokens count as such
NONE = ()  # message content: they do not


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


# ---- the public functions ----------------------------------------------------------------------


def render_chat(
    tokenizer: BaseTokenizer, messages: Sequence[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and, per token, whether SFT trains on it (what the assistant
    emits in each of its turns, through the stop token that ends the turn).

    With add_generation_prompt, the sequence ends with the opening of an assistant turn (ChatML's
    `<|im_start|>assistant\\n`): the prompt from which a model writes its reply. `tools` (JSON
    tool descriptions) are passed to a Jinja template that renders them; ChatML ignores them.
    """
    messages = check_messages(messages)
    stops = stop_ids(tokenizer)
    ids: list[int] = []
    trained: list[bool] = []
    opens = True  # does the next piece begin the text, or follow a special token?
    specials = tuple(tokenizer.special_tokens)
    for segment in _segments(tokenizer, messages, add_generation_prompt, tools):
        flat = []
        for text, allowed in segment.pieces:
            # A piece continues the text before it: a SentencePiece-style tokenizer puts its "▁"
            # prefix only where the whole rendering would get one, not before every piece.
            flat += tokenizer.encode(text, allowed) if opens else tokenizer.encode_continuation(text, allowed)
            if text:
                opens = allowed == ALL and text.endswith(specials)
        if segment.reply:
            end = next((k for k, t in enumerate(flat) if t in stops), None)
            if end is None:
                raise DataError(f"{describe(tokenizer)} ends message {segment.index} (assistant) without a stop token "
                                f"({_stop_names(tokenizer)}), so a model could not learn to end its reply; "
                                "set the tokenizer's eos or stop tokens to the token that ends an assistant turn")
            learn = [k <= end for k in range(len(flat))]
        else:
            learn = [False] * len(flat)
        ids += flat
        trained += learn
    return ids, trained


def render_prompt(tokenizer: BaseTokenizer, messages: Sequence[dict], tools: list[dict] | None = None) -> list[int]:
    """The ids a model continues to answer `messages` (ends with an open assistant turn)."""
    return render_chat(tokenizer, messages, add_generation_prompt=True, tools=tools)[0]


def reply_ids(tokenizer: BaseTokenizer, messages: Sequence[dict], reply: str) -> list[int]:
    """The ids a model emits after `render_prompt(messages)` to answer with `reply`: the reply's
    tokens and the stop token that ends the turn (ChatML: `encode(reply) + [<|im_end|>]`)."""
    prompt = render_prompt(tokenizer, messages)
    ids, trained = render_chat(tokenizer, [*messages, {"role": "assistant", "content": reply}])
    return [t for t, learn in zip(ids[len(prompt):], trained[len(prompt):]) if learn]


def stop_ids(tokenizer: BaseTokenizer) -> set[int]:
    """Tokens that end an assistant reply: the eos token, the conventions' stop tokens, and
    `<|im_end|>` where the format uses it (ChatML, or a template that writes it)."""
    conventions = tokenizer.conventions
    names = {conventions.eos_token, *conventions.stop_tokens}
    if chat_format(tokenizer) == "chatml" or (conventions.chat_template is not None and IM_END in conventions.chat_template):
        names.add(IM_END)
    return {tokenizer.special_tokens[name] for name in names if name in tokenizer.special_tokens}


def reply_end_id(tokenizer: BaseTokenizer) -> int:
    """The stop token that ends an assistant turn in this format (ChatML: `<|im_end|>`): the one
    a constrained reply ends with."""
    form = chat_format(tokenizer)
    if form != "template":
        return tokenizer.special_tokens[IM_END] if form == "chatml" else tokenizer.eot_id
    return reply_ids(tokenizer, PROBE[1:2], PROBE[2]["content"])[-1]


def chat_format(tokenizer: BaseTokenizer) -> str:
    """"template" (the model's own Jinja template), "chatml" (groklm's) or "chatml-text" (ChatML
    spelled as text, for a tokenizer without the ChatML special tokens)."""
    if tokenizer.conventions.chat_template is not None:
        return "template"
    if IM_START in tokenizer.special_tokens and IM_END in tokenizer.special_tokens:
        return "chatml"
    return "chatml-text"


def render_text(tokenizer: BaseTokenizer, messages: Sequence[dict], add_generation_prompt: bool = False,
                tools: list[dict] | None = None) -> str:
    """The conversation as the format writes it (what transformers' apply_chat_template returns)."""
    messages = check_messages(messages)
    return "".join(text for segment in _segments(tokenizer, messages, add_generation_prompt, tools)
                   for text, _ in segment.pieces)


def check_chat_embeddings(tokenizer: BaseTokenizer, vocab_size: int, whose: str) -> None:
    """Raise ConfigError unless a model with `vocab_size` embedding rows has one for every special
    token the chat format uses (markup and stop tokens): without them every conversation would
    fail, so fine-tuning, chat and serve refuse the model up front. `whose` names the run."""
    by_id = {i: name for name, i in tokenizer.special_tokens.items()}
    missing = sorted(t for t in chat_token_ids(tokenizer) if t >= vocab_size)
    if missing:
        names = ", ".join(f"{by_id.get(t, t)} (id {t})" for t in missing)
        raise ConfigError(
            f"the tokenizer of {whose} gives the chat tokens {names}, but the model has vocab_size={vocab_size}: "
            "it has no embedding for the chat tokens. Use a model whose vocab_size covers its tokenizer"
        )


def chat_token_ids(tokenizer: BaseTokenizer) -> set[int]:
    """The special-token ids a conversation in this format uses: its markup and its stop tokens
    (each needs a row in the model's embedding)."""
    if chat_format(tokenizer) == "chatml":
        return {tokenizer.special_tokens[IM_START], tokenizer.special_tokens[IM_END]} | stop_ids(tokenizer)
    if chat_format(tokenizer) == "chatml-text":
        return stop_ids(tokenizer)
    specials = set(tokenizer.special_tokens.values())
    probe = _probe(tokenizer)
    used = set(render_chat(tokenizer, probe)[0]) | set(render_prompt(tokenizer, probe[:-1]))
    return (used & specials) | stop_ids(tokenizer)


def check_chat_template(tokenizer: BaseTokenizer, source: str | None = None) -> None:
    """Raise TokenizerError unless the tokenizer's chat format can hold a conversation: its
    template compiles, renders a system/user/assistant probe (or, for a template that refuses
    system messages, a user/assistant one), shows the assistant's reply, opens the reply (a
    non-empty generation prompt, or a user turn that ends with markup the reply follows, as
    Llama 2's `[/INST]`), is prefix-stable and ends the reply with a stop token. `source` (the
    file the template came from) starts the message."""
    try:
        _check_chat_template(tokenizer)
    except TokenizerError as error:
        if source is None:
            raise
        raise TokenizerError(f"{source}: {error}") from None


def _check_chat_template(tokenizer: BaseTokenizer) -> None:
    if chat_format(tokenizer) != "template":
        return
    where = describe(tokenizer)
    _compile(tokenizer.conventions.chat_template)  # a syntax error is reported as such
    try:
        probe = _probe(tokenizer)
    except DataError as error:
        raise TokenizerError(f"{error}; fix or replace the template") from None
    reply = probe[-1]["content"]
    if reply not in _render(tokenizer, probe, False, None):
        raise TokenizerError(f"{where} has no assistant role: the assistant's reply {reply!r} does not appear when a "
                             "conversation is rendered; use a chat template that renders assistant messages")
    question = probe[:-1]
    prompt = _render(tokenizer, question, True, None)
    if prompt == _render(tokenizer, question, False, None) and not _reply_follows(prompt, tokenizer, probe):
        raise TokenizerError(f"{where} has no assistant role: add_generation_prompt adds nothing, so there is no "
                             "prompt from which a model would write its reply; use a chat template that opens an assistant turn")
    try:
        render_chat(tokenizer, probe)
        render_prompt(tokenizer, question)
    except DataError as error:
        raise TokenizerError(str(error)) from None


def _reply_follows(prompt: str, tokenizer: BaseTokenizer, probe: list[dict]) -> bool:
    """Does the user's turn end with markup that the assistant's reply follows directly (after
    blanks at most)? So it does in templates whose user turn ends by opening the reply (Llama 2's
    and Mistral's `[INST] ... [/INST]`): they need no add_generation_prompt. A template that only
    forgot to open the assistant turn puts that turn's markup between the two; one with no markup
    after the user's text leaves nothing to tell a model that its reply begins."""
    full = _render(tokenizer, probe, False, None)
    marked = not prompt.rstrip().endswith(probe[-2]["content"])
    return marked and full.startswith(prompt) and full[len(prompt):].lstrip().startswith(probe[-1]["content"])


def _probe(tokenizer: BaseTokenizer) -> list[dict]:
    """PROBE, or its user/assistant part for a template that refuses system messages (Gemma's)."""
    try:
        _render(tokenizer, PROBE, False, None)
        return PROBE
    except DataError as with_system:
        try:
            _render(tokenizer, PROBE[1:], False, None)
        except DataError:
            raise with_system from None
        return PROBE[1:]


def describe(tokenizer: BaseTokenizer) -> str:
    """How errors name the chat format."""
    if chat_format(tokenizer) == "template":
        return "the model's chat template (tokenizer.json, conventions.chat_template)"
    return "the ChatML chat format"


# ---- ChatML ---------------------------------------------------------------------------------------


class _Segment:
    """What one step of the rendering added: text pieces, each with the special tokens it may
    contain, and whether it is an assistant turn's emitted part (trained through its stop token)."""

    __slots__ = ("pieces", "reply", "index")

    def __init__(self, pieces: list[tuple[str, object]], reply: bool = False, index: int = -1):
        self.pieces = [(text, allowed) for text, allowed in pieces if text]
        self.reply = reply
        self.index = index


def _segments(tokenizer: BaseTokenizer, messages: list[dict], add_generation_prompt: bool,
              tools: list[dict] | None) -> list[_Segment]:
    if chat_format(tokenizer) == "template":
        return _template_segments(tokenizer, messages, add_generation_prompt, tools)
    return _chatml_segments(tokenizer, messages, add_generation_prompt)


def _chatml_segments(tokenizer: BaseTokenizer, messages: list[dict], add_generation_prompt: bool) -> list[_Segment]:
    """ChatML, with its markup as special tokens or (without them) as text ending replies with eos."""
    if chat_format(tokenizer) == "chatml":
        markup, end, reply_end = ALL, IM_END, IM_END
    else:
        markup, end, reply_end = NONE, IM_END, tokenizer.conventions.eos_token
    segments = []
    for i, message in enumerate(messages):
        assistant = message["role"] == "assistant"
        segments.append(_Segment([(f"{IM_START}{message['role']}\n", markup)]))
        close = (reply_end, ALL) if assistant else (end, markup)
        segments.append(_Segment([(message["content"], NONE), close, ("\n", NONE)], reply=assistant, index=i))
    if add_generation_prompt:
        segments.append(_Segment([(f"{IM_START}assistant\n", markup)]))
    return segments


# ---- Jinja templates ------------------------------------------------------------------------------


def _template_segments(tokenizer: BaseTokenizer, messages: list[dict], add_generation_prompt: bool,
                       tools: list[dict] | None) -> list[_Segment]:
    """Prefix diffing (see the module docstring): what each message adds to the rendering."""
    segments = []
    done = ""  # the rendering of the messages so far
    for i, message in enumerate(messages):
        assistant = message["role"] == "assistant"
        if assistant:
            prompt = _render(tokenizer, messages[:i], True, tools)
            segments.append(_Segment([(_added(tokenizer, done, prompt, i, "the generation prompt before it"), ALL)]))
            done = prompt
        rendered = _render(tokenizer, messages[: i + 1], False, tools)
        added = _added(tokenizer, done, rendered, i, "it")
        head, content, tail = _locate_content(tokenizer, messages, i, done, added, tools)
        segments.append(_Segment([(head, ALL), (content, NONE), (tail, ALL)], reply=assistant, index=i))
        done = rendered
    if add_generation_prompt:
        prompt = _render(tokenizer, messages, True, tools)
        segments.append(_Segment([(_added(tokenizer, done, prompt, len(messages), "the generation prompt"), ALL)]))
    return segments


def _added(tokenizer: BaseTokenizer, before: str, after: str, index: int, what: str) -> str:
    """`after` minus its prefix `before`; an error when the template rewrote earlier text."""
    if not after.startswith(before):
        raise DataError(
            f"{describe(tokenizer)} is not prefix-stable: rendering message {index} with {what} changes the text of the "
            "messages before it, so the tokens of each turn (and the assistant-only loss mask) are not defined. "
            "Use a template whose rendering of a conversation extends the rendering of its beginning"
        )
    return after[len(before):]


def _locate_content(tokenizer: BaseTokenizer, messages: list[dict], i: int, done: str, added: str,
                    tools: list[dict] | None) -> tuple[str, str, str]:
    """(template text before, message i's content as rendered, template text after) of `added`.

    The same prefix is rendered with a placeholder as message i's content: the text around the
    placeholder is the template's, and what stands in its place in `added` is the content (as the
    template wrote it, e.g. trimmed)."""
    stand_in = [*messages[:i], {**messages[i], "content": PLACEHOLDER}]
    try:
        probe = _render(tokenizer, stand_in, False, tools)
    except DataError:
        probe = ""
    if probe.startswith(done) and probe.count(PLACEHOLDER) - done.count(PLACEHOLDER) == 1:
        head, tail = probe[len(done):].split(PLACEHOLDER)
        if added.startswith(head) and added.endswith(tail) and len(head) + len(tail) <= len(added):
            return head, added[len(head): len(added) - len(tail)], tail
    content = messages[i]["content"]  # the template treats the placeholder differently: find the text itself
    for shown in dict.fromkeys((content, content.strip())):
        at = added.rfind(shown)
        if shown and at >= 0:
            return added[:at], shown, added[at + len(shown):]
    if not content.strip() or not added:  # nothing to find, or the template left the message out
        return added, "", ""
    raise DataError(f"{describe(tokenizer)} rewrites the content of message {i} ({messages[i]['role']}), so groklm "
                    "cannot tell the message's text from the template's; use a template that writes message content as given")


def _render(tokenizer: BaseTokenizer, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> str:
    conventions = tokenizer.conventions
    template = _compile(conventions.chat_template)
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
                               bos_token=conventions.bos_token or "", eos_token=conventions.eos_token)
    except Exception as error:  # the template is untrusted code: anything it raises is its failure
        raise DataError(f"{describe(tokenizer)} failed to render a conversation of {len(messages)} message(s) "
                        f"({type(error).__name__}: {error})") from None


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' marker of assistant text): its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja's own tojson escapes HTML characters; chat templates expect plain JSON
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols, _Generation])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TokenizerError(f"the model's chat template (tokenizer.json, conventions.chat_template) is not valid Jinja: "
                             f"{error.message} (line {error.lineno}); fix or replace the template") from None


def _stop_names(tokenizer: BaseTokenizer) -> str:
    by_id = {i: name for name, i in tokenizer.special_tokens.items()}
    return ", ".join(sorted(by_id[i] for i in stop_ids(tokenizer))) or "none"
