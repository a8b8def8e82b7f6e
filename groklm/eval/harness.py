"""The eval harness: accuracy of a run on tasks that a program can grade, on the TEST split
(or on "heldout": test problems in wordings no training record uses, see groklm.tasks.base).

Two ways to ask a model a question:

  generate  NAME      the model answers freely (greedy, up to max_new_tokens, stopping at
                      <|im_end|>); the task's verifier grades the answer in [0, 1]. Correct
                      means a perfect score (1.0); the mean score also credits partial answers.
                      With a temperature > 0 it samples `samples` answers per problem instead
                      (seeded): accuracy is then pass@1 averaged over the samples, and the mean
                      score is the expected verifier reward, the quantity RL maximises; a
                      chat model is used this way (the server's default temperature is 1).
  choice    NAME:mc   no generation: each option is scored by the log-likelihood the model gives
                      it as the assistant's reply, sum over its tokens (and the closing
                      <|im_end|>, so "1" is not rewarded for being the start of "12") of
                      log p(token | prompt, earlier tokens); the most likely option is the
                      answer. The mean score is the probability the model puts on the right
                      option, normalised over the options: a softer signal that moves before
                      the accuracy does.

Multiple choice works on models too weak to write a well-formed answer; generation is what a
user sees. Both use test problems, which no training set (of any seed) contains.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from groklm.errors import ConfigError
from groklm.infer.engine import sample_responses
from groklm.infer.scoring import choice_logprobs, pack_responses, token_logprobs
from groklm.runs import load
from groklm.tasks import DEFAULT_TASKS, HELDOUT, TASKS
from groklm.tokenizer.chat import render_prompt

CHOICE_SUFFIX = ":mc"
EVAL_SPLITS = ("test", HELDOUT)


def parse_tasks(spec: str | list[str]) -> list[str]:
    """"arithmetic,spam:mc" -> ["arithmetic", "spam:mc"]; "all" / "all:mc" expand to the default
    tasks (DEFAULT_TASKS: every task but safety, which is named when wanted)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in (n.strip() for n in names if n.strip()):
        base, choice = (name[: -len(CHOICE_SUFFIX)], True) if name.endswith(CHOICE_SUFFIX) else (name, False)
        bases = list(DEFAULT_TASKS) if base == "all" else [base]
        for b in bases:
            if b not in TASKS:
                raise ConfigError(f"unknown task {b!r}; tasks are {', '.join(TASKS)} (add {CHOICE_SUFFIX} for multiple choice), or all")
            out.append(b + CHOICE_SUFFIX if choice else b)
    if not out:
        raise ConfigError("no tasks to evaluate: --tasks NAME[,NAME] (e.g. arithmetic,spam:mc or all)")
    return list(dict.fromkeys(out))


def answer_ids(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
               temperature: float = 0.0, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, reply ids) for each conversation, answered side by side by the engine: greedy,
    or sampled at `temperature` with answer seeds drawn from `seed`. A reply keeps its stop token.
    A prompt is cut to the last block_size - max_new_tokens tokens, the context the reply was
    sampled from (so a KL computed on these ids sees what the sampler saw)."""
    keep = max(1, model.config.block_size - max_new_tokens)
    prompts = [render_prompt(tokenizer, m)[-keep:] for m in conversations]
    replies = sample_responses(model, tokenizer, prompts, max_new_tokens, temperature=temperature,
                               generator=torch.Generator().manual_seed(seed))
    return prompts, replies


def reply_text(tokenizer, reply: list[int]) -> str:
    """A reply's text without its stop token (ids past the vocabulary are padding rows: no text)."""
    return tokenizer.decode([t for t in reply if t < tokenizer.vocab_size and t not in tokenizer.special_tokens.values()])


def generate_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                     temperature: float = 0.0, seed: int = 0) -> list[str]:
    """The model's reply to each conversation as text (greedy unless temperature > 0)."""
    _, replies = answer_ids(model, tokenizer, conversations, max_new_tokens, temperature, seed)
    return [reply_text(tokenizer, r) for r in replies]


def answer_kl(model, reference, prompts: list[list[int]], replies: list[list[int]], temperature: float = 1.0,
              chunk: int = 64) -> list[float]:
    """KL(model || reference) of each sampled reply, in nats: sum over its tokens of
    log p_model(token) - log p_reference(token). Averaged over replies sampled from the model,
    this estimates the KL between the two models' answer distributions (PPO's penalty)."""
    device = next(model.parameters()).device
    kls: list[float] = []
    for start in range(0, len(prompts), chunk):
        batch = pack_responses(prompts[start : start + chunk], replies[start : start + chunk], model.config.block_size)
        seqs, mask = batch.sequences.to(device), batch.mask.to(device)
        with torch.no_grad():
            logp = token_logprobs(model(seqs)[0] / temperature, seqs)
            ref = token_logprobs(reference(seqs)[0] / temperature, seqs)
        kls += ((logp - ref) * mask).sum(dim=1).tolist()
    return kls


def eval_generation(model, tokenizer, task: str, n: int, seed: int, max_new_tokens: int, progress=None,
                    temperature: float = 0.0, samples: int = 1, reference=None, split: str = "test") -> dict:
    """Greedy answers (temperature 0), or `samples` sampled answers per problem; count = answers graded.
    With a reference model and sampling, also the mean KL(model || reference) of the answers."""
    records = TASKS[task].rl_prompts(n, split=split, seed=seed) * (samples if temperature > 0 else 1)
    prompts, replies = answer_ids(model, tokenizer, [r["prompt"] for r in records], max_new_tokens, temperature, seed)
    scores = [TASKS[task].verify(record, reply_text(tokenizer, reply)) for record, reply in zip(records, replies)]
    if progress:
        progress.update(n)
    correct = sum(s >= 1.0 for s in scores)
    result = {"kind": "generate" if temperature == 0 else "sample", "temperature": temperature, "count": len(scores),
              "correct": correct, "accuracy": correct / len(scores), "mean_score": sum(scores) / len(scores)}
    if reference is not None and temperature > 0:
        kls = answer_kl(model, reference, prompts, replies, temperature)
        result["kl"] = sum(kls) / len(kls)
    return result


def eval_choices(model, tokenizer, task: str, n: int, seed: int, progress=None, split: str = "test") -> dict:
    correct, right_prob, count = 0, 0.0, 0
    for record in TASKS[task].choices(n, split=split, seed=seed):
        logp = choice_logprobs(model, tokenizer, record["prompt"], record["choices"])
        correct += int(logp.argmax().item() == record["answer_index"])
        right_prob += logp.softmax(dim=0)[record["answer_index"]].item()
        count += 1
        if progress:
            progress.update()
    return {"kind": "choice", "count": count, "correct": correct,
            "accuracy": correct / count, "mean_score": right_prob / count}


def evaluate_model(model, tokenizer, tasks, n: int = 100, seed: int = 0, max_new_tokens: int = 64, progress: bool = False,
                   temperature: float = 0.0, samples: int = 1, reference=None, split: str = "test") -> dict:
    """{task: {"kind", "count", "correct", "accuracy", "mean_score"}} for a loaded model, on the
    test split or the heldout one (`split`).
    temperature > 0: generation tasks sample `samples` answers per problem (multiple choice is
    unchanged), and with a `reference` model also report the answers' mean KL to it ("kl")."""
    if temperature < 0 or samples < 1:
        raise ConfigError(f"temperature must be >= 0 and samples >= 1; got {temperature} and {samples}")
    if split not in EVAL_SPLITS:
        raise ConfigError(f"evals run on the {' or '.join(EVAL_SPLITS)} split, not {split!r} "
                          "(the train split is what the model learned from)")
    names = parse_tasks(tasks)
    results = {}
    with tqdm(total=n * len(names), unit="q", disable=not progress, dynamic_ncols=True) as bar:
        for name in names:
            if name.endswith(CHOICE_SUFFIX):
                results[name] = eval_choices(model, tokenizer, name[: -len(CHOICE_SUFFIX)], n, seed, bar, split)
            else:
                results[name] = eval_generation(model, tokenizer, name, n, seed, max_new_tokens, bar, temperature, samples,
                                                reference, split)
    return results


def evaluate_run(run, tasks="all", n: int = 100, seed: int = 0, device: str = "cpu", max_new_tokens: int = 64,
                 progress: bool = False, temperature: float = 0.0, samples: int = 1, reference=None,
                 split: str = "test") -> dict:
    """Load a run and evaluate it: {"run", "n", "seed", "split", "temperature", "samples", "tasks": {task: result}}.
    reference: another run (e.g. the SFT model an aligned run started from) to measure the sampled
    answers' KL against."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    model, tokenizer = load(run, device=device)
    ref_model = None
    if reference is not None:
        ref_model, ref_tokenizer = load(reference, device=device)
        if ref_tokenizer.vocab_size != tokenizer.vocab_size or ref_tokenizer.special_tokens != tokenizer.special_tokens:
            raise ConfigError(f"--reference {reference} has another tokenizer than {run}; a KL between them compares "
                              "different token sequences (use the run this one was fine-tuned from)")
    results = evaluate_model(model, tokenizer, tasks, n, seed, max_new_tokens, progress, temperature, samples, ref_model,
                             split)
    samples = samples if temperature > 0 else 1
    return {"run": str(run), "n": n, "seed": seed, "split": split, "temperature": temperature, "samples": samples,
            "tasks": results}


def format_table(report: dict) -> str:
    how = "greedy"
    if report.get("temperature"):
        how = f"{report['samples']} sampled answer(s) per problem at temperature {report['temperature']:g}"
    lines = [f"{report['run']} ({report['split']} split, seed {report['seed']}, {how})",
             f"{'task':<16} {'kind':<9} {'count':>6} {'accuracy':>9} {'mean score':>11}"
             + (f" {'KL (nats)':>9}" if any("kl" in r for r in report["tasks"].values()) else "")]
    for name, r in report["tasks"].items():
        kl = f" {r['kl']:>9.3f}" if "kl" in r else ""
        lines.append(f"{name:<16} {r['kind']:<9} {r['count']:>6} {r['accuracy']:>8.1%} {r['mean_score']:>11.3f}{kl}")
    return "\n".join(lines)
