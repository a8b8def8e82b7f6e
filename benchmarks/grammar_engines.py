"""Grammar engines compared: outlines-core's eager index against llguidance's lazy masks.

Both engines get the same regex (groklm.infer.schema_regex: outlines-core's translation of the
schema, numeric ranges, ASCII classes, one-blank whitespace) and the same vocabulary, and walk
a reply: at each step the allowed token at a fixed pseudo-random position among the allowed
ones (eos excluded) is taken, up to --steps tokens or until only eos is left. The walks differ
where text is forced (a property name): outlines-core allows every token that spells a prefix
of it, llguidance only our tokenizer's own spelling (tests/test_hostile_schemas.py checks that
llguidance's masks always lie within outlines-core's exact ones).

    outlines-core   Index(regex, vocabulary): every automaton state x every token, up front
                    (what groklm used before llguidance); Guide.write_mask_into per step
    llguidance      groklm.infer.constrain.Grammar (what groklm uses now): the regex is
                    parsed, states are built as the reply reaches them, each step walks the
                    token trie; the default GrammarLimits apply

Schemas: every schema of benchmarks/schemas.py's suite (one process per engine), and the
hostile ones the server must survive, each in its own process: a property with `pattern: "[^\\n]{1,400}"`,
an object of 2000 `maxLength` string properties all required, and the same all optional
(whose regex outlines-core makes quadratic: groklm now refuses it from an estimate before
building it; for outlines-core the estimate is skipped, to show what the old code did).

Every process is watched: past --memory-gb of resident memory or --timeout seconds it is
killed and reported as such (outcome "over memory" / "timeout"). Figures per schema and
engine: compile seconds (schema -> regex -> engine), per-token mask time (median, max, in µs,
the mask read into a torch bool tensor as the decoder does), peak RSS of the process (VmHWM)
and its RSS before compiling; the ratios are outlines-core / llguidance, same run, same machine.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/grammar_engines.py --tokenizer RUN/tokenizer [--memory-gb 3] [--timeout 120]
(`groklm import smollm2-135m-instruct --out RUN` makes a run with the real 49152-token
SmolLM2 tokenizer.)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from outlines_core import Guide, Index, Vocabulary  # noqa: E402
from schemas import SUITE  # noqa: E402

from groklm.errors import ConfigError  # noqa: E402
from groklm.infer import constrain  # noqa: E402
from groklm.infer.schema_regex import schema_regex  # noqa: E402
from groklm.tokenizer import load_tokenizer  # noqa: E402
from groklm.tokenizer.chat import reply_end_id  # noqa: E402

ENGINES = ("outlines_core", "llguidance")
PROPERTIES = {f"field_{i}": {"type": "string", "maxLength": 40} for i in range(2000)}
HOSTILE = {
    "pattern_400": {"type": "object", "properties": {"p": {"type": "string", "pattern": "[^\\n]{1,400}"}},
                    "required": ["p"]},
    "props_2000_required": {"type": "object", "properties": PROPERTIES, "required": list(PROPERTIES)},
    "props_2000_optional": {"type": "object", "properties": PROPERTIES},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def status_kb(pid: int | str, field: str) -> int:
    """A memory figure (kB) from /proc/PID/status: VmRSS now, VmHWM the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ---- the engines, as the decoder drives them ------------------------------------------------------


class OutlinesGrammar:
    """groklm's grammar before llguidance: an outlines-core Index over the vocabulary's bytes."""

    def __init__(self, pattern: str, tokenizer):
        self.eos_id = reply_end_id(tokenizer)
        specials = set(tokenizer.special_tokens.values())
        by_bytes: dict[bytes, list[int]] = {}
        for token_id in range(tokenizer.vocab_size):
            if token_id not in specials:
                by_bytes.setdefault(tokenizer.token_bytes(token_id), []).append(token_id)
        self.index = Index(pattern, Vocabulary(self.eos_id, by_bytes))

    def start(self):
        return OutlinesState(self)


class OutlinesState:
    def __init__(self, grammar: OutlinesGrammar):
        self.grammar, self.guide = grammar, Guide(grammar.index)

    def allowed(self, vocab_size: int) -> torch.Tensor:
        words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        self.guide.write_mask_into(words.ctypes.data, words.size, words.itemsize)
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab_size]
        return torch.from_numpy(bits.astype(bool))

    def advance(self, token_id: int) -> None:
        self.guide.advance(token_id, return_tokens=False)


def compile_grammar(engine: str, schema: dict, tokenizer):
    if engine == "outlines_core":
        return OutlinesGrammar(schema_regex(schema, max_chars=1 << 62), tokenizer)
    return constrain.Grammar.from_json_schema(schema, tokenizer)


def walk(grammar, vocab_size: int, steps: int) -> list[float]:
    """Per-step mask seconds along the walk."""
    state, times = grammar.start(), []
    for step in range(steps):
        began = time.perf_counter()
        allowed = state.allowed(vocab_size)
        times.append(time.perf_counter() - began)
        allowed[grammar.eos_id] = False
        choices = allowed.nonzero().flatten().tolist()
        if not choices:
            break
        token = choices[(step * 7919) % len(choices)]
        state.advance(token)
    return times


def measure(engine: str, schema: dict, tokenizer, steps: int) -> dict:
    began = time.perf_counter()
    try:
        grammar = compile_grammar(engine, schema, tokenizer)
    except ConfigError as exc:
        return {"outcome": "refused", "compile_s": time.perf_counter() - began, "message": str(exc)[:300]}
    compiled = time.perf_counter() - began
    times = walk(grammar, tokenizer.vocab_size, steps)
    return {"outcome": "served", "compile_s": compiled, "steps": len(times),
            "mask_us_median": statistics.median(times) * 1e6, "mask_us_max": max(times) * 1e6}


def child(engine: str, case: str, tokenizer_dir: str, steps: int) -> None:
    """One engine on one case ("suite" or a hostile one): the figures as a JSON line."""
    tokenizer = load_tokenizer(tokenizer_dir)
    constrain.Grammar.from_regex("warm", tokenizer)  # llguidance's view of the vocabulary (~0.1 s), not a compile
    constrain.CACHE.clear()
    before = status_kb("self", "VmRSS")
    if case == "suite":
        results = {model.__name__: measure(engine, model.model_json_schema(), tokenizer, steps) for model in SUITE}
    else:
        results = {case: measure(engine, HOSTILE[case], tokenizer, steps)}
    for result in results.values():
        result["rss_before_mb"] = before / 1024
        result["peak_rss_mb"] = status_kb("self", "VmHWM") / 1024  # for the suite: over all its schemas
    print(json.dumps(results))


# ---- the parent: one watched process per (engine, case) ------------------------------------------


def run_child(engine: str, case: str, args) -> dict:
    command = [sys.executable, __file__, "--child", engine, case, "--tokenizer", args.tokenizer, "--steps", str(args.steps)]
    limit_kb, began, peak = args.memory_gb * 2**20, time.monotonic(), 0
    hard = int(2 * args.memory_gb * 2**30)  # a backstop on address space, should polling be too slow

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap)
    outcome = None
    while process.poll() is None:
        try:
            rss, peak = status_kb(process.pid, "VmRSS"), max(peak, status_kb(process.pid, "VmHWM"))
        except (FileNotFoundError, ProcessLookupError):
            break
        if rss > limit_kb:
            outcome = f"over memory: killed at {rss / 2**20:.2f} GB resident (limit {args.memory_gb} GB)"
        elif time.monotonic() - began > args.timeout:
            outcome = f"timeout: killed after {args.timeout} s"
        if outcome:
            process.kill()
            break
        time.sleep(0.02)
    out, err = process.communicate()
    seconds = time.monotonic() - began
    if outcome is None and process.returncode != 0:
        outcome = f"crashed with {process.returncode}: {err.strip()[-300:]}"
    if outcome is not None:
        names = [model.__name__ for model in SUITE] if case == "suite" else [case]
        return {name: {"outcome": outcome, "seconds": seconds, "peak_rss_mb": peak / 1024} for name in names}
    return json.loads(out.strip().splitlines()[-1])


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a tokenizer directory (RUN/tokenizer)")
    parser.add_argument("--steps", type=int, default=300, help="tokens walked per schema (default 300)")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="resident memory a process may use (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a process may run (default 120)")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.tokenizer, args.steps)
        return

    results: dict[str, dict[str, dict]] = {}
    for case in ["suite", *HOSTILE]:
        for engine in ENGINES:
            log(f"{engine} on {case} ...")
            for name, figures in run_child(engine, case, args).items():
                results.setdefault(name, {})[engine] = figures
                log(f"  {name}: {figures}")
    for pair in results.values():
        old, new = pair["outlines_core"], pair["llguidance"]
        if old.get("outcome") == new.get("outcome") == "served":
            pair["compile_ratio"] = ratio(old["compile_s"], new["compile_s"])
            pair["mask_median_ratio"] = ratio(old["mask_us_median"], new["mask_us_median"])
    suite = [pair for name, pair in results.items() if name not in HOSTILE]
    served = [p for p in suite if "compile_ratio" in p]
    summary = {
        "suite_schemas": len(suite),
        "suite_served_by": {engine: sum(p[engine].get("outcome") == "served" for p in suite) for engine in ENGINES},
        "suite_compile_s_total": {engine: sum(p[engine].get("compile_s", 0) for p in served) for engine in ENGINES},
        "suite_mask_us_median": {engine: statistics.median(p[engine]["mask_us_median"] for p in served) if served else None
                                 for engine in ENGINES},
        "hostile": {name: {engine: results[name][engine].get("outcome") for engine in ENGINES} for name in HOSTILE},
    }
    print(json.dumps({"benchmark": "grammar_engines", "tokenizer": args.tokenizer,
                      "vocab_size": load_tokenizer(args.tokenizer).vocab_size, "memory_gb": args.memory_gb,
                      "timeout_s": args.timeout, "steps": args.steps, "summary": summary, "results": results}))


if __name__ == "__main__":
    main()
