"""Self-Play fIne-tuNing (SPIN, Chen et al. 2024): improve an SFT model with its SFT data alone.

SFT makes a model imitate demonstrations; it stops short of them. SPIN keeps going without new
data or preferences: the model plays against its previous self. In iteration t the model of
iteration t - 1 answers each prompt of the SFT data (the conversation minus its last assistant
message); the data's reply and the model's own reply make a preference pair,

    chosen   = the SFT data's reply          (what a human wrote)
    rejected = the model's reply              (what the previous iteration writes)

and the model is trained on these pairs with DPO's logistic loss, the previous iteration's model
as the reference (groklm.train.dpo: SPIN's objective is that loss with these pairs):

    loss = -log sigmoid(beta * ((log p(chosen) - log p_prev(chosen)) - (log p(rejected) - log p_prev(rejected))))

The result is the next iteration's model and reference. A reply the model already writes
exactly as the data does makes a pair with two equal sides, which carries no signal: such
pairs are dropped and counted. SPIN's fixed point is a model whose replies are the data's, so
the share of dropped pairs, iteration by iteration, is how close it has come. When every pair
is dropped there is nothing left to learn and the iterations stop.

The model's replies are sampled (temperature 1, the default), as SPIN's argument needs: the
data's distribution is the fixed point only if the rejected side is drawn from the model's. A
greedy model (--temperature 0) shows one mode per kind of prompt; on data that mixes styles (the
speedrun's SFT data answers 30% of prompts in a wordier one) the pairs then always oppose the
other mode, and the model flips between styles from one iteration to the next (benchmarks/spin.py
measured it: test accuracy 56.5% -> 11.8% -> 59.7% -> 22.5%).

Each iteration is an ordinary run directory that can be evaluated, served or exported; it is a
DPO run (config.json "stage": "dpo") whose parent is the previous iteration and whose data is
that iteration's pairs file:

    OUT/spin.json                the settings
    OUT/pairs/iter-T.jsonl       iteration T's pairs ({prompt, chosen, rejected}), and .val.jsonl
    OUT/iter-T/                  iteration T's model (with LoRA: the merged model, its adapters
                                 in OUT/iter-T.adapters/, since the next iteration's reference
                                 must be a plain run)
    OUT/summary.jsonl            one line per finished iteration: pairs used and dropped, losses,
                                 reward margins

    groklm spin RUN --data synthetic --out OUT --iterations 3 [--prompts 2000] [--beta 0.1]

`--resume` continues OUT with its saved settings: finished iterations are skipped, an
interrupted one continues from its pairs and its checkpoint, and --iterations may be raised.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from groklm.errors import ConfigError, DataError
from groklm.infer.engine import sample_responses
from groklm.jsonl import read_jsonl, write_jsonl
from groklm.rundir import METRICS_FILE, RunDir, read_json, write_json
from groklm.runs import load, merge_run
from groklm.tokenizer.chat import render_prompt
from groklm.train.dpo import DEFAULTS, train_dpo
from groklm.train.loop import resolve_device
from groklm.train.plots import read_metrics
from groklm.train.preferences import SYNTHETIC, check_finite, hold_out, pair_train_config, resolve_base
from groklm.train.sft import load_records

STAGE = "spin"
SETTINGS_FILE, SUMMARY_FILE, PAIRS_DIR = "spin.json", "summary.jsonl", "pairs"
# The synthetic conversations per task: `groklm sft`'s default, so that `--data synthetic` gives
# the prompts an SFT model was trained on.
SYNTHETIC_N = 1000
GENERATION_CHUNK = 64  # prompts answered side by side
SETTINGS = {"iterations": 3, "prompts": 1000, "beta": 0.1, "temperature": 1.0, "max_new_tokens": 64,
            "synthetic_chatty": 0.0}


# ---- data -------------------------------------------------------------------------------------


def conversation_to_pair(record: dict, where: str) -> dict:
    """{"prompt": the messages before the last assistant message, "chosen": that message's text},
    with the record's other keys (a synthetic task's name)."""
    messages = record.get("messages") if isinstance(record, dict) else None
    replies = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "assistant"]
    if not replies:
        raise DataError(f"{where} has no assistant reply; SPIN pairs the data's last assistant reply "
                        "with the model's own, so every conversation needs one")
    last = replies[-1]
    if last == 0:
        raise DataError(f"{where} starts with the assistant's reply; there is no prompt to answer")
    rest = {k: v for k, v in record.items() if k != "messages"}
    return {**rest, "prompt": messages[:last], "chosen": messages[last]["content"]}


def load_conversations(data: str, val: str | None, prompts: int, chatty: float, skip_bad_lines: bool,
                       seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out) prompts with the data's replies (conversation_to_pair): `prompts` of the
    training conversations, drawn once (seeded) and the same every iteration, and a tenth as
    many held out: synthetic data's test split, the --val file, or a seeded tenth of the file."""
    records, spec = load_records(data, skip_bad_lines, "train", SYNTHETIC_N, chatty)
    if val is not None:
        val_records, _ = load_records(val, skip_bad_lines, "test", SYNTHETIC_N, chatty)
    elif spec.startswith(SYNTHETIC):
        val_records, _ = load_records(spec, skip_bad_lines, "test", SYNTHETIC_N, chatty)
    else:
        records, val_records = hold_out(records, spec, "conversation", seed)
    chosen = []
    for name, group, n in (("train", records, prompts), ("held-out", val_records, max(1, prompts // 10))):
        group = list(group)
        random.Random(f"spin/{name}/{seed}").shuffle(group)
        chosen.append([conversation_to_pair(r, f"{spec}: {name} conversation {i + 1}") for i, r in enumerate(group[:n])])
    return chosen[0], chosen[1]


def self_play_pairs(model, tokenizer, conversations: list[dict], max_new_tokens: int, temperature: float = 0.0,
                    seed: int = 0, progress: bool = False) -> tuple[list[dict], int]:
    """(pairs, dropped): the model answers each conversation's prompt (greedy, or sampled at
    `temperature`); its reply becomes the pair's "rejected" side, the data's reply stays "chosen".
    A reply equal to the data's carries no signal: it is dropped and counted."""
    generator = torch.Generator().manual_seed(seed)
    specials = set(tokenizer.special_tokens.values())
    pairs, dropped = [], 0
    for start in tqdm(range(0, len(conversations), GENERATION_CHUNK), desc="self-play", unit="batch", disable=not progress):
        batch = conversations[start : start + GENERATION_CHUNK]
        prompts = [render_prompt(tokenizer, c["prompt"]) for c in batch]
        replies = sample_responses(model, tokenizer, prompts, max_new_tokens, temperature, generator=generator)
        for conversation, reply in zip(batch, replies):
            # The reply's text without its stop token (ids past the vocabulary are padding rows).
            text = tokenizer.decode([t for t in reply if t < tokenizer.vocab_size and t not in specials])
            if text == conversation["chosen"]:
                dropped += 1
            else:
                pairs.append({**conversation, "rejected": text})
    return pairs, dropped


# ---- the iterations ---------------------------------------------------------------------------


def train_spin(
    run: str | os.PathLike | None,
    data: str | None,
    out: str | os.PathLike,
    iterations: int | None = None,
    prompts: int | None = None,
    val: str | None = None,
    beta: float | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    synthetic_chatty: float | None = None,
    overrides: dict | None = None,
    skip_bad_lines: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """SPIN iterations 1..`iterations` from the GPT run `run` (an SFT model) on the SFT data
    `data` (a JSONL file of {"messages": [...]} or "synthetic[:tasks]") into `out`; returns the
    summary, one record per finished iteration. overrides: training settings of every
    iteration (as `--set` takes; DPO's defaults otherwise). On resume the settings are the saved
    ones; only `iterations` may change."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        # Every process would write the same pairs files; one process generates and trains.
        raise ConfigError("SPIN runs in one process: launch `groklm spin` without torchrun")
    out = Path(out)
    given = {"base": run, "data": data, "val": val, "iterations": iterations, "prompts": prompts, "beta": beta,
             "temperature": temperature, "max_new_tokens": max_new_tokens, "synthetic_chatty": synthetic_chatty,
             "overrides": overrides or None}
    settings = resumed_settings(out, given) if resume else fresh_settings(out, given)
    cfg = pair_train_config(STAGE, DEFAULTS, settings["overrides"])  # bad --set keys fail before any work
    train, held_out = load_conversations(settings["data"], settings["val"], settings["prompts"], settings["synthetic_chatty"],
                                         skip_bad_lines, cfg.seed)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SETTINGS_FILE, settings)
    summary = read_summary(out)
    for t in range(len(summary) + 1, settings["iterations"] + 1):
        if summary and summary[-1].get("converged"):
            break
        previous = out / f"iter-{t - 1}" if t > 1 else Path(settings["base"])
        summary.append(run_iteration(t, previous, out, train, held_out, settings, cfg, progress))
        write_jsonl(out / SUMMARY_FILE, summary)
    return summary


def fresh_settings(out: Path, given: dict) -> dict:
    """The settings of a new SPIN directory, checked before anything is written."""
    if (out / SETTINGS_FILE).exists():
        raise ConfigError(f"{out} already holds SPIN iterations; pass --resume to continue them, or choose another --out")
    if RunDir(out).holds_run():
        raise ConfigError(f"{out} is a run directory; SPIN writes a directory of runs: choose another --out")
    base, _ = resolve_base(given["base"], None)
    if not given["data"]:
        raise ConfigError("SPIN needs the SFT data: --data FILE.jsonl or --data synthetic[:tasks]")
    data = given["data"] if given["data"].startswith(SYNTHETIC) else str(Path(given["data"]).resolve())
    settings = {**SETTINGS, **{k: v for k, v in given.items() if v is not None}, "base": str(base.resolve()), "data": data,
                "val": str(Path(given["val"]).resolve()) if given["val"] else None, "overrides": given["overrides"] or {}}
    check_settings(settings)
    return settings


def resumed_settings(out: Path, given: dict) -> dict:
    """A SPIN directory's saved settings; `iterations` may be raised, nothing else may change."""
    if not (out / SETTINGS_FILE).is_file():
        raise ConfigError(f"{out} holds no SPIN iterations ({SETTINGS_FILE}) to resume; run without --resume")
    saved = read_json(out / SETTINGS_FILE)
    changed = [key for key, value in given.items()
               if value is not None and key != "iterations" and not same_setting(key, value, saved[key])]
    if changed:
        raise ConfigError(f"{out} continues with its saved settings; only --iterations may change on resume, "
                          f"not {', '.join(changed)}")
    settings = {**saved, "iterations": given["iterations"] or saved["iterations"]}
    check_settings(settings)
    return settings


def same_setting(key: str, given, saved) -> bool:
    """Whether a setting given on resume is the saved one (a file named by another path counts)."""
    if key in ("base", "data", "val") and saved is not None and not str(given).startswith(SYNTHETIC):
        return Path(given).resolve() == Path(saved)
    return given == saved


def check_settings(settings: dict) -> None:
    for key in ("iterations", "prompts", "max_new_tokens"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ConfigError(f"{key} must be a whole number >= 1, got {settings[key]!r}")
    if check_finite("beta", settings["beta"]) <= 0:
        raise ConfigError(f"beta must be > 0, got {settings['beta']}")
    check_finite("temperature", settings["temperature"])
    if not 0.0 <= settings["synthetic_chatty"] <= 1.0:
        raise ConfigError(f"synthetic_chatty is a share in [0, 1], got {settings['synthetic_chatty']}")


def read_summary(out: Path) -> list[dict]:
    return read_jsonl(out / SUMMARY_FILE, allow_empty=True) if (out / SUMMARY_FILE).is_file() else []


def run_iteration(t: int, previous: Path, out: Path, train: list[dict], held_out: list[dict], settings: dict, cfg,
                  progress: bool) -> dict:
    """Iteration t: the pairs of `previous` (made, or read back when an interrupted iteration
    resumes), then DPO against `previous` into OUT/iter-t; returns its summary record."""
    run = out / f"iter-{t}"
    pairs_file, val_file, counts_file = (out / PAIRS_DIR / f"iter-{t}{suffix}" for suffix in (".jsonl", ".val.jsonl", ".json"))
    if not counts_file.is_file():  # written last: the pairs of an interrupted iteration are whole
        clock = time.perf_counter()
        model, tokenizer = load(previous, device=str(resolve_device(cfg)))
        generate = dict(max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"], seed=cfg.seed + t,
                        progress=progress)
        pairs, dropped = self_play_pairs(model, tokenizer, train, **generate)
        val_pairs, val_dropped = self_play_pairs(model, tokenizer, held_out, **generate)
        del model
        pairs_file.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(pairs_file, pairs)
        # Held-out prompts the model already answers as the data does leave no pair to measure
        # on; the iteration's own pairs stand in.
        write_jsonl(val_file, val_pairs or pairs)
        write_json(counts_file, {"prompts": len(train), "pairs": len(pairs), "dropped": dropped,
                                 "val_prompts": len(held_out), "val_pairs": len(val_pairs), "val_dropped": val_dropped,
                                 "generate_s": round(time.perf_counter() - clock, 2)})
    counts = read_json(counts_file)
    record = {"iteration": t, **counts}
    if not counts["pairs"]:
        print(f"SPIN iteration {t}: the model's every reply is the data's; nothing left to learn", flush=True)
        return {**record, "run": str(previous), "converged": True}
    clock = time.perf_counter()
    trained = out / f"iter-{t}.adapters" if cfg.lora else run
    if RunDir(trained).holds_run():
        train_dpo(None, None, trained, resume=True, progress=progress)
    else:
        train_dpo(previous, str(pairs_file), trained, val=str(val_file), beta=settings["beta"], loss_type="sigmoid",
                  overrides=settings["overrides"], progress=progress)
    if cfg.lora and not RunDir(run).holds_run():
        merge_run(trained, run)  # the next iteration starts from, and is measured against, this model
    return {**record, "run": str(run), **training_figures(trained), "train_s": round(time.perf_counter() - clock, 2)}


def training_figures(run: Path) -> dict:
    """The mean loss and reward margin over the first and the last logged interval of steps, and
    the last validation figures."""
    records = read_metrics(run / METRICS_FILE)
    val = [r for r in records if "val_loss" in r]
    figures = {"steps": records[-1]["step"], "loss_start": records[0]["loss"], "loss_end": records[-1]["loss"],
               "margin_start": records[0]["rewards/margins"], "margin_end": records[-1]["rewards/margins"]}
    if val:
        figures.update(val_loss=val[-1]["val_loss"], val_margin=val[-1]["val_rewards/margins"],
                       val_accuracy=val[-1]["val_accuracy"])
    return figures
