"""Kahneman-Tversky Optimization: align a model to replies marked good or bad one at a time.

DPO needs pairs: two replies to one prompt, one preferred. Feedback rarely comes that way; a
thumbs up or down on a single reply is what people give. KTO learns from such unpaired labels.
Like DPO it scores a reply by its implicit reward, the log-ratio r = log pi(y|x) - log ref(y|x)
against the frozen starting model, but instead of comparing two replies it compares each one
with a reference point z_ref, Kahneman and Tversky's "status quo" that gains and losses are
measured from:

    desirable   (label true)    loss = lambda_D * (1 - sigmoid(beta * (r - z_ref)))
    undesirable (label false)   loss = lambda_U * (1 - sigmoid(beta * (z_ref - r)))

A desirable reply is pushed above the reference point, an undesirable one below it, and the
sigmoid saturates, so a reply far on the right side stops pulling (the value function's
diminishing sensitivity). z_ref is the KL divergence of the policy from the reference, estimated
on the batch itself: each prompt is paired with *another* example's reply (prompt i with reply
i - 1, as TRL does), and z_ref = mean(log pi - log ref) over those mismatched pairs, clamped at 0
(a KL is never negative) and detached (it is a baseline, not something to optimise). A policy
that raises every reply's likelihood alike raises z_ref with it and gains nothing; only moving
desirable replies up *relative to* the rest pays. lambda_D and lambda_U weigh the two kinds; the
KTO authors advise lambda_D * n_D / (lambda_U * n_U) within [1, 4/3] for n_D desirable and n_U
undesirable examples, and a warning says when the data fall outside.

The data: JSON Lines, one example per line (TRL's unpaired preference format):

    {"prompt": "What is 2+3?", "completion": "5", "label": true}
    {"prompt": [{"role": "user", "content": "What is 2+3?"}], "completion": {"role": "assistant", "content": "6"}, "label": false}

`prompt` is a string (one user message) or a message list ending before the reply; `completion`
is a string, one assistant message, or a list holding one assistant message; `label` is true
(desirable) or false (undesirable). A line may also be a preference pair ({"prompt", "chosen",
"rejected"}, the DPO stage's format), which becomes two examples, chosen -> true and rejected ->
false (`pairs_to_examples`), so every DPO data file and `--data synthetic[:tasks]` work as they
are. Training needs at least one example of each label.

    groklm kto RUN --data thumbs.jsonl --out RUN_KTO [--beta 0.1] [--desirable-weight 1] [--undesirable-weight 1]

A micro-batch (batch_size >= 2, so that a prompt can meet another example's reply) is the rows
prompt_i + reply_i, then the rows prompt_i + reply_{i-1} for the KL estimate, as one tensor in
the layout of the preference pairs (preferences.collate), plus the labels. z_ref comes from the
micro-batch itself; under torchrun each process estimates its own (TRL averages the estimate
over devices), which changes only how noisy the reference point is.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

from groklm.data.chat_data import as_messages, preference_record
from groklm.errors import ConfigError, DataError
from groklm.jsonl import read_jsonl
from groklm.model import GPTConfig
from groklm.rundir import TOKENIZER_DIR, read_config
from groklm.tokenizer.chat import check_messages
from groklm.tokenizer.load import load_tokenizer
from groklm.train.dpo import DEFAULTS, policy_and_reference, reference_logps
from groklm.train.preferences import (
    SYNTHETIC,
    check_finite,
    collate,
    encode_reply,
    hold_out,
    load_pairs,
    make_pair_batches,
    make_pair_val_batch,
    open_pair_run,
    resolve_base,
    resolve_data,
    sequence_logps,
)
from groklm.train.stage import Place, resolve_lora, run_stage

STAGE = "kto"
# lambda_D * n_D / (lambda_U * n_U) outside this range draws a warning (the KTO paper's eq. 8).
ADVISED_BALANCE = (1.0, 4 / 3)

# ---- data -----------------------------------------------------------------------------------


def pairs_to_examples(pairs: list[dict]) -> list[dict]:
    """Preference pairs -> KTO examples: each pair's chosen reply is a desirable example and its
    rejected reply an undesirable one, both with the pair's prompt (and its other keys)."""
    examples = []
    for pair in pairs:
        rest = {k: v for k, v in pair.items() if k not in ("chosen", "rejected")}
        examples.append({**rest, "completion": pair["chosen"], "label": True})
        examples.append({**rest, "completion": pair["rejected"], "label": False})
    return examples


def _completion_text(value: object) -> str:
    """A completion as the assistant's reply text: a string, one assistant message, or a list of one."""
    if isinstance(value, str):
        return value
    messages = check_messages([value] if isinstance(value, dict) else value, "completion")
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise DataError("completion must be a string or exactly one assistant message")
    return messages[0]["content"]


def _examples_of_line(obj: object) -> list[dict]:
    """One line's examples: a KTO example, or the two of a preference pair."""
    if isinstance(obj, dict) and "label" not in obj and "chosen" in obj and "rejected" in obj:
        return pairs_to_examples([preference_record(obj)])
    if not isinstance(obj, dict):
        raise DataError('expected an object with "prompt", "completion" and "label" (or a pair: "prompt", "chosen", "rejected")')
    missing = [k for k in ("prompt", "completion", "label") if k not in obj]
    if missing:
        raise DataError(f"missing {', '.join(repr(k) for k in missing)} (a KTO example has \"prompt\", \"completion\" "
                        "and \"label\"; a preference pair has \"prompt\", \"chosen\" and \"rejected\")")
    if not isinstance(obj["label"], bool):
        raise DataError(f'"label" must be true (a desirable reply) or false (an undesirable one), got {obj["label"]!r}')
    prompt = as_messages(obj["prompt"], "user", "prompt")
    if prompt[-1]["role"] == "assistant":
        raise DataError("prompt ends with an assistant message; the reply being judged must come next")
    return [{**obj, "prompt": prompt, "completion": _completion_text(obj["completion"])}]


def read_examples(path: str | os.PathLike, skip_bad_lines: bool = False) -> list[dict]:
    """KTO examples [{"prompt": [messages], "completion": str, "label": bool}, ...] from a JSONL
    file of examples, preference pairs, or both."""
    return [example for line in read_jsonl(path, _examples_of_line, skip_bad_lines) for example in line]


def load_examples(spec: str, val: str | None = None, skip_bad_lines: bool = False, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train examples, held-out examples) from "synthetic[:tasks]" (its preference pairs, each
    split in two) or a JSONL file; as for pairs, `val` is another file, or a seeded tenth is held out."""
    if spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":"):
        train_pairs, val_pairs = load_pairs(spec, seed=seed)
        return pairs_to_examples(train_pairs), pairs_to_examples(val_pairs)
    examples = read_examples(spec, skip_bad_lines)
    if val is not None:
        return examples, read_examples(val, skip_bad_lines)
    return hold_out(examples, spec, "example", seed)


def encode_examples(tokenizer, examples: list[dict], block_size: int, where: str = "data") -> list[tuple]:
    """[(context ids, reply ids, label)]: the context is everything the model reads before the
    reply (prompt and assistant header), the reply its trained tokens (text and stop token).
    Kept apart so that a KL row can join one example's context to another's reply; render_chat
    tokenizes the reply on its own, so context + reply is exactly the rendered conversation.
    Examples longer than block_size are dropped (with one warning): cutting one would cut the
    very reply being judged."""
    encoded, too_long = [], 0
    for example in examples:
        ids, mask = encode_reply(tokenizer, example["prompt"], example["completion"])
        start = mask.index(True)
        end = len(mask) - mask[::-1].index(True)  # a reply's trained tokens are one run
        if end > block_size:
            too_long += 1
            continue
        encoded.append((ids[:start], ids[start:end], example["label"]))
    if too_long:
        warnings.warn(f"{where}: skipped {too_long} of {len(examples)} examples longer than block_size={block_size} tokens", stacklevel=2)
    if not encoded:
        raise DataError(f"{where}: no example fits in block_size={block_size} tokens")
    return encoded


def check_labels(encoded: list[tuple], where: str, desirable_weight: float, undesirable_weight: float) -> None:
    """Refuse training data of one label only; warn when the weighted balance is outside the advised range."""
    desirable = sum(label for *_, label in encoded)
    undesirable = len(encoded) - desirable
    if not desirable or not undesirable:
        raise DataError(
            f"{where}: {desirable} desirable (label true) and {undesirable} undesirable (label false) training "
            "examples; KTO needs at least one of each. It moves each reply's implicit reward above or below a reference "
            "point, and with one kind only it just pushes every reply the same way. With only good replies, "
            "fine-tune with `groklm sft`; preference pairs ({prompt, chosen, rejected}) give one of each.")
    balance = desirable_weight * desirable / (undesirable_weight * undesirable)
    low, high = ADVISED_BALANCE
    if not low <= balance <= high:
        warnings.warn(f"{where}: {desirable} desirable and {undesirable} undesirable examples give "
                      f"desirable_weight * n_D / (undesirable_weight * n_U) = {balance:.2f}; the KTO authors advise "
                      f"{low:g} to {high:.2f} (set --desirable-weight / --undesirable-weight)", stacklevel=3)


def collate_examples(examples: list[tuple], block_size: int) -> tuple[torch.Tensor, ...]:
    """Examples -> (ids, response, lengths, labels). Rows 0..B-1 are context_i + reply_i; rows
    B..2B-1 are context_i + reply_{i-1} (the first takes the last reply), the mismatched pairs of
    the KL estimate. A mismatched row longer than block_size loses its reply's tail: the policy
    and the reference score the same cut reply, so its log-ratio is still an honest sample."""
    rows = []
    for i, (context, reply, _) in enumerate(examples):
        other = examples[i - 1][1]
        kl_ids = (context + other)[:block_size]
        rows.append((context + reply, [False] * len(context) + [True] * len(reply),
                     kl_ids, ([False] * len(context) + [True] * len(other))[:block_size]))
    labels = torch.tensor([label for *_, label in examples], dtype=torch.bool)
    return (*collate(rows), labels)


# ---- the loss -------------------------------------------------------------------------------


def kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """z_ref: the batch's estimate of KL(policy || reference) from mismatched prompt/reply pairs.
    Clamped at 0 because a KL cannot be negative (a negative mean is sampling noise), and
    detached because it is the reference point replies are judged against, not a target."""
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example weighted losses, and the implicit rewards beta * log(pi / ref) (detached: for logging).

    labels: True for a desirable reply; kl: z_ref (kl_estimate)."""
    log_ratio = policy_logps - ref_logps
    # A desirable reply gains as its reward rises above the reference point, an undesirable one
    # as it falls below; 1 - sigmoid is the loss of that value, bounded in (0, 1).
    desirable = 1 - torch.sigmoid(beta * (log_ratio - kl))
    undesirable = 1 - torch.sigmoid(beta * (kl - log_ratio))
    losses = torch.where(labels, desirable_weight * desirable, undesirable_weight * undesirable)
    return losses, beta * log_ratio.detach()


def _class_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the rows of one label; 0 for a micro-batch without that label (rare with
    mixed data, and the loop averages stats over micro-batches, where a NaN would spoil the log)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def kto_loss_fn(reference, beta: float, desirable_weight: float, undesirable_weight: float):
    """loss_fn(policy, (ids, response, lengths, labels)) for the training loop. reference: the
    frozen reference model, or None for a LoRA policy (dpo.policy_and_reference)."""

    def loss_fn(policy, batch):
        ids, response, _, labels = batch
        matched, mismatched = ids.chunk(2)
        matched_response, mismatched_response = response.chunk(2)
        with torch.no_grad():  # z_ref is a baseline: its policy side needs no gradient either
            policy_kl_logps = sequence_logps(policy, mismatched, mismatched_response)
        policy_logps = sequence_logps(policy, matched, matched_response)
        ref_logps, ref_kl_logps = reference_logps(reference, policy, ids, response).chunk(2)
        kl = kl_estimate(policy_kl_logps, ref_kl_logps)
        losses, rewards = kto_loss(policy_logps, ref_logps, labels, kl, beta, desirable_weight, undesirable_weight)
        desirable, undesirable = labels.float(), (~labels).float()
        chosen, rejected = _class_mean(rewards, desirable), _class_mean(rewards, undesirable)
        # "accuracy": the share of replies already on their label's side of the reference point.
        right_side = torch.where(labels, rewards > beta * kl, rewards < beta * kl)
        logps = policy_logps.detach()
        return losses.mean(), {"kl": kl, "accuracy": right_side.float().mean(),
                               "rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
                               "logps/chosen": _class_mean(logps, desirable), "logps/rejected": _class_mean(logps, undesirable)}

    return loss_fn


# ---- the stage ------------------------------------------------------------------------------


def train_kto(
    run: str | os.PathLike | None,
    data: str | None,
    out: str | os.PathLike,
    val: str | None = None,
    beta: float | None = None,
    desirable_weight: float | None = None,
    undesirable_weight: float | None = None,
    overrides: dict | None = None,
    skip_bad_lines: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """KTO-train a copy of the GPT run `run` (the policy) against a frozen copy (the reference)
    into `out`, a normal GPT run ("stage": "kto"); returns `out`. On resume the settings default
    to the saved ones, and the reference is the saved base run again."""
    run_dir, cfg, saved = open_pair_run(out, STAGE, DEFAULTS, overrides or {}, resume)
    base, model_config = resolve_base(run, saved)
    data, val = resolve_data(data, val, saved, STAGE)
    settings = {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0, **(saved or {}).get(STAGE, {})}
    beta = check_finite("beta", beta if beta is not None else settings["beta"])
    desirable_weight = check_finite("desirable_weight", desirable_weight if desirable_weight is not None
                                    else settings["desirable_weight"])
    undesirable_weight = check_finite("undesirable_weight", undesirable_weight if undesirable_weight is not None
                                      else settings["undesirable_weight"])
    for name, value in (("beta", beta), ("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if cfg.batch_size < 2:
        raise ConfigError(f"KTO estimates its KL reference point by pairing each prompt with another example's reply "
                          f"in the same micro-batch, so batch_size must be at least 2, got {cfg.batch_size}")
    if resume and read_config(base)["model"] != model_config:
        raise ConfigError(f"the reference run {base} no longer matches the model this run started from")
    lora = resolve_lora(cfg, base, saved, run_dir.path, GPTConfig.from_dict(model_config))
    config = {"stage": STAGE, "parent": base, "arch": "gpt", "model": model_config, "train": cfg.to_dict(),
              "data": {"spec": data, "val": val},
              STAGE: {"beta": beta, "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight}}
    if lora is not None:
        config["lora"] = lora

    tokenizer = load_tokenizer(run_dir.tokenizer_dir if resume else base / TOKENIZER_DIR)
    train_examples, val_examples = load_examples(data, val, skip_bad_lines, cfg.seed)
    block_size = model_config["block_size"]
    train_set = encode_examples(tokenizer, train_examples, block_size, "training examples")
    val_set = encode_examples(tokenizer, val_examples, block_size, "held-out examples")
    check_labels(train_set, data, desirable_weight, undesirable_weight)
    collate_fn = functools.partial(collate_examples, block_size=block_size)
    mean_length = sum(len(context) + len(reply) for context, reply, _ in train_set) / len(train_set)

    def setup(place: Place):
        policy, reference = policy_and_reference(base, lora, place.device)
        return place.setup(policy, make_pair_batches(train_set, cfg, collate_fn), make_pair_val_batch(val_set, cfg, collate_fn),
                           tokens_per_micro=round(cfg.batch_size * mean_length),
                           loss_fn=kto_loss_fn(reference, beta, desirable_weight, undesirable_weight))

    return run_stage(run_dir, config, cfg, setup, resume=resume, progress=progress, tokenizer=base / TOKENIZER_DIR)
