"""hf: a local Hugging Face `transformers` checkpoint directory, decoded here token by token.

    backend = load_backend("hf:path/to/checkpoint")

transformers is an optional dependency (the dev extra): it is imported when a backend is made.
"""

from __future__ import annotations

import inspect
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from groklm.apps.backends.base import Backend, ChatOptions, Logprob, Reply, Usage, callable_tools, finish_reply
from groklm.errors import CheckpointError, ConfigError, TokenizerError
from groklm.infer.decode import decode
from groklm.infer.requests import reply_grammar
from groklm.infer.stop_strings import StopStrings
from groklm.infer.tool_calls import ToolSpec, to_chatml
from groklm.tokenizer.imports import from_hf_file

# ChatML, for checkpoints that have <|im_start|>/<|im_end|> but no chat template of their own
# (a run exported by `groklm export` is one): the same text groklm.tokenizer.chat renders.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class HFBackend(Backend):
    """A local Hugging Face `transformers` checkpoint (AutoModelForCausalLM + AutoTokenizer),
    decoded token by token by the reference decoder (groklm.infer.decode), so that grammars,
    logprobs and stop strings work as on `local`.

    Constrained decoding needs our view of the vocabulary (each id's bytes); it is read from the
    directory's tokenizer.json when that is a byte-level BPE (GPT-2, Llama 3, Qwen, groklm
    exports). Other tokenizers (SentencePiece) get no "grammar" capability, and `extract` falls
    back to prompting with the schema and validating the parsed reply."""

    kind, provider = "hf", "transformers"

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        try:
            import transformers
        except ImportError:
            raise ConfigError("the hf backend needs the transformers package: pip install transformers "
                              "(or pip install groklm[dev])") from None
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

    def _generate(self, messages: list[dict], opts: ChatOptions, tools: list[ToolSpec],
                  run: Generation) -> Iterator[tuple[str, Logprob | None]]:
        """(new text, logprob) per generated token, until an end-of-turn token or the limit;
        `run` receives the prompt length, the token count and the finish reason."""
        params = opts.sampling()
        prompt = self._prompt(to_chatml(messages, tools))
        grammar = None
        if self.grammar_tokenizer is not None:
            grammar = reply_grammar(self.grammar_tokenizer, tools, opts.tool_choice, opts.json_schema, opts.regex)
        state = grammar.start() if grammar is not None else None

        def mask(logits: torch.Tensor) -> torch.Tensor:  # the grammar's state moves on with each token below
            return logits.masked_fill(~self._allowed(state, logits.device), float("-inf"))

        run.prompt_tokens = len(prompt)
        steps = decode(CachedForward(self.hf_model, self.cache_arg, self.vocab_size),
                       torch.tensor([prompt], device=self.device), min(params.max_tokens, self.context - len(prompt)),
                       params.temperature, top_p=params.top_p,
                       seed=params.seed if params.seed is not None else random.getrandbits(63),
                       hook=mask if state is not None else None)
        generated: list[int] = []
        shown = ""
        logprob = None
        for step in steps:
            token = int(step.token)
            logprob = self._logprob(step.logits[0], token, params.logprobs) if params.logprobs is not None else None
            run.tokens += 1
            if token in self.end_ids:
                run.finish = "stop"
                break
            if state is not None:
                state.advance(token)
            generated.append(token)
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

    def _allowed(self, state, device) -> torch.Tensor:
        """The tokens the grammar allows next, over the model's ids; a complete reply may end
        with the model's own end-of-turn tokens."""
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        mask = state.allowed(self.grammar_tokenizer.vocab_size, device)[: self.vocab_size]
        allowed[: mask.numel()] = mask
        if state.complete:
            allowed[sorted(i for i in self.end_ids if i < self.vocab_size)] = True
        return allowed

    def _logprob(self, logits: torch.Tensor, token: int, top: int) -> Logprob:
        logp = F.log_softmax(logits, dim=-1)
        alternatives = None
        if top:
            values, ids = logp.topk(min(top, logp.numel()))
            alternatives = [(self.hf_tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]
        return Logprob(self.hf_tokenizer.decode([token]), float(logp[token]), alternatives)

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        tools = callable_tools(opts)
        run, stops = Generation(), StopStrings(opts.stop)
        text, logprobs = "", []
        for piece, logprob in self._generate(messages, opts, tools, run):
            text += stops.push(piece)
            if logprob is not None:
                logprobs.append(logprob)
            if stops.hit:
                run.finish = "stop"
                break
        text += stops.flush()
        usage = Usage(run.prompt_tokens, run.tokens)
        return finish_reply(text, run.finish, usage, self.model, logprobs if opts.logprobs is not None else None, tools)

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        stops = StopStrings(opts.stop)
        for piece, _ in self._generate(messages, opts, [], Generation()):
            shown = stops.push(piece)
            if shown:
                yield shown
            if stops.hit:
                return
        tail = stops.flush()
        if tail:
            yield tail

    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(self._prompt(to_chatml(list(messages))))

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
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


class CachedForward:
    """A transformers causal LM for the reference decoder: fed only the tokens it has not seen,
    its keys and values kept in its own cache -> the logits of the next token, (B, vocab)."""

    def __init__(self, model, cache_arg: str, vocab_size: int):
        self.model, self.cache_arg, self.vocab_size = model, cache_arg, vocab_size
        self.past = None

    def __call__(self, new: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=new, use_cache=True, **{self.cache_arg: self.past})
        self.past = out[self.cache_arg]
        return out.logits[:, -1, : self.vocab_size]
