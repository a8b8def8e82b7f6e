"""benchmarks/bench.py: one table from every benchmark, run here over tiny fake benchmark scripts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from groklm.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
# Scripts in benchmarks/ that are no row of the table: no peer to hold a ratio against (growth's
# curves, schemas' valid rates, LoRA against full fine-tuning, LoRA's before/after, SPIN's and the
# two reward models' iterations against their own starting model, from a speedrun's runs; data
# cleaning's throughput and raw-vs-clean loss; rephrasing; the tokenizers' cost per language; the
# reranker against its own first stage, seconds a query on a CPU), and bench itself.
NOT_ROWS = {"bench", "growth", "schemas", "finetune", "lora_real_model", "spin", "two_reward_models", "data_clean",
            "rephrase", "tokenizer_languages", "rerank", "api_calls", "tiktoken_offline"}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = load_bench()
Benchmark, Goal, Row = bench.Benchmark, bench.Goal, bench.Row

FAST = """
import json, sys
print("warming up", file=sys.stderr)
print("a line of chatter on stdout")
print(json.dumps({"ours": 150.0, "theirs": 100.0, "nested": {"sizes": [{"ms": 9.0}, {"ms": 2.0}]},
                  "recall": 0.97, "argv": sys.argv[1:]}))
"""
SLOW = """
import json
print(json.dumps({"ours": 30.0, "theirs": 20.0}))
"""
CRASH = """
import sys
print("step 1 ...", file=sys.stderr)
raise RuntimeError("the peer ran out of memory")
"""
SILENT = """
print("no figures here")
"""
REPORT = """
import json, sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True)
print("== stage one")
(out / "report.json").write_text(json.dumps({"wall": 420.0, "scores": [0.5, 0.9]}))
"""


@pytest.fixture
def scripts(tmp_path):
    paths = {}
    for name, text in {"fast": FAST, "slow": SLOW, "crash": CRASH, "silent": SILENT, "report": REPORT}.items():
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(text)
    return paths


def fake_benchmarks(scripts) -> tuple:
    def summarize(report: dict) -> dict:
        return {"wall_s": report["wall"], "best": max(report["scores"])}

    return (
        Benchmark("fast", (str(scripts["fast"]), "--size", "big"), quick=("--size", "small"), rows=(
            Row("fast thing", "ours", "theirs", "tok/s", goals=(Goal("ratio", ">=", 1.3),)),
            Row("fast thing's latency", "nested.sizes.-1.ms", "nested.sizes.0.ms", "ms", lower_is_better=True,
                goals=(Goal("recall", ">=", 0.95, "recall"), Goal("ratio", ">=", 20))),
            Row("a key the script does not print", "ours", "peer_that_is_absent", "tok/s"),
        )),
        Benchmark("slow", (str(scripts["slow"]),), rows=(
            Row("slow thing", "ours", "theirs", "s", lower_is_better=True, goals=(Goal("ratio", ">=", 1.0),)),
        )),
        Benchmark("crash", (str(scripts["crash"]),), rows=(Row("crashing thing", "ours", "theirs"),)),
        Benchmark("peerless", (str(scripts["fast"]),), needs=(bench.modules("surely_no_such_peer_module"),),
                  rows=(Row("needs a peer", "ours", "theirs"),)),
        Benchmark("absent", (str(scripts["fast"].parent / "not_written_yet.py"),), rows=(Row("future", "ours"),)),
        Benchmark("nano", (str(scripts["slow"]), "--nanogpt", "{nanogpt}"), needs=(bench.nanogpt_checkout,),
                  rows=(Row("needs nanoGPT", "ours", "theirs"),)),
        Benchmark("silent", (str(scripts["silent"]),), rows=(Row("prints no JSON", "ours"),)),
        Benchmark("report", (str(scripts["report"]), "--out", "{tmp}/run"), report_file="{tmp}/run/report.json",
                  summarize=summarize, rows=(
            Row("the main job", "wall_s", unit="s", goals=(Goal("wall s", "<=", 600, "wall_s"),
                                                          Goal("best", ">=", 0.7, "best"))),
        )),
    )


def table(output: str) -> dict[str, list[str]]:
    """The printed table's cells by metric (the header and rule lines left out)."""
    lines = [line for line in output.splitlines() if " | " in line][1:]
    return {cells[0].rstrip(" *"): cells for cells in ([c.strip() for c in line.split(" | ")] for line in lines)}


def test_every_row_gets_figures_or_a_reason_and_the_run_goes_on(scripts, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench.main(["--out", str(out)], fake_benchmarks(scripts)) == 0
    captured = capsys.readouterr()
    rows = table(captured.out)
    assert rows["fast thing"] == ["fast thing", "150 tok/s", "100 tok/s", "1.50x", "ratio >= 1.3", "yes"]
    # lower is better: the ratio is the peer's figure over ours, and a goal on a figure the table
    # does not show says its value
    assert rows["fast thing's latency"][1:4] == ["2 ms", "9 ms", "4.50x"]
    assert rows["fast thing's latency"][5] == "NO (recall 0.97)"
    assert rows["a key the script does not print"][5] == "not run: the output has no peer_that_is_absent"
    assert rows["slow thing"][3:] == ["0.67x", "ratio >= 1", "NO"]
    assert rows["crashing thing"][5] == "failed: RuntimeError: the peer ran out of memory"
    assert rows["needs a peer"][5] == "not run: surely_no_such_peer_module not installed"
    assert rows["future"][5].startswith("not run: ") and "not_written_yet.py is not in this checkout" in rows["future"][5]
    assert rows["needs nanoGPT"][5].startswith("not run: no nanoGPT checkout")
    assert rows["prints no JSON"][5] == "failed: no JSON line on stdout"
    assert rows["the main job"][1] == "420 s" and rows["the main job"][5] == "yes (best 0.9)"
    # the scripts' progress streams through; the report-writing command's stdout is progress too
    assert "warming up" in captured.err and "step 1 ..." in captured.err and "== stage one" in captured.err
    assert "*" not in captured.out


def test_results_file_holds_raw_lines_machine_and_verdicts(scripts, tmp_path, capsys):
    out = tmp_path / "results.json"
    bench.main(["--out", str(out)], fake_benchmarks(scripts))
    capsys.readouterr()
    document = json.loads(out.read_text())
    fast = document["benchmarks"]["fast"]
    assert fast["status"] == "ok" and fast["output"]["argv"] == ["--size", "big"]
    assert fast["wall_s"] >= 0 and fast["machine"]["cores"] >= 1 and fast["machine"]["torch"]
    assert fast["machine"]["cpu"] and fast["date"]
    assert document["benchmarks"]["crash"]["status"] == "failed"
    assert document["benchmarks"]["peerless"] == document["benchmarks"]["peerless"] | {"status": "not run", "output": None}
    by_metric = {row["metric"]: row for row in document["rows"]}
    assert by_metric["fast thing"] | {"groklm": 150.0, "peer": 100.0, "ratio": 1.5, "met": True} == by_metric["fast thing"]
    assert by_metric["slow thing"]["met"] is False and by_metric["crashing thing"]["met"] is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_quick_passes_small_sizes_and_marks_the_rows(scripts, tmp_path, capsys):
    out = tmp_path / "results.json"
    bench.main(["--quick", "--only", "fast,slow", "--out", str(out)], fake_benchmarks(scripts))
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["benchmarks"]["fast"]["output"]["argv"] == ["--size", "big", "--size", "small"]
    assert "fast thing *" in printed and "slow thing *" not in printed  # slow has no small sizes
    assert "--quick" in printed.splitlines()[-1]


def test_only_runs_a_subset_and_keeps_the_other_records(scripts, tmp_path, capsys):
    out = tmp_path / "results.json"
    benchmarks = fake_benchmarks(scripts)
    bench.main(["--only", "slow", "--out", str(out)], benchmarks)
    first = json.loads(out.read_text())["benchmarks"]["slow"]
    capsys.readouterr()
    bench.main(["--only", "fast,nano", "--nanogpt", str(tmp_path), "--out", str(out)], benchmarks)
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert set(document["benchmarks"]) == {"slow", "fast", "nano"}
    assert document["benchmarks"]["slow"] == first
    assert document["benchmarks"]["nano"]["status"] == "ok"  # --nanogpt given: the placeholder is filled
    assert document["benchmarks"]["nano"]["command"].endswith(f"--nanogpt {tmp_path.resolve()}")
    # the table printed is this run's; --from-results prints every record the file holds
    assert set(table(printed)) == {"fast thing", "fast thing's latency", "a key the script does not print", "needs nanoGPT"}
    bench.main(["--from-results", "--out", str(out)], benchmarks)
    assert {"slow thing", "fast thing", "needs nanoGPT"} <= set(table(capsys.readouterr().out))


def test_bad_names_are_refused(scripts, tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark nope; known: fast, slow"):
        bench.main(["--only", "fast,nope", "--out", str(tmp_path / "r.json")], fake_benchmarks(scripts))
    with pytest.raises(ConfigError, match="does not exist"):
        bench.main(["--from-results", "--out", str(tmp_path / "none.json")], fake_benchmarks(scripts))


def test_lookup_follows_dotted_paths():
    output = {"a": {"32": 1.5, "b": [{"c": 1}, {"c": 2}]}, "none": None}
    assert bench.lookup(output, "a.32") == 1.5
    assert bench.lookup(output, "a.b.-1.c") == 2 and bench.lookup(output, "a.b.0.c") == 1
    for absent in ("a.x", "a.b.2.c", "a.b.c", "none"):
        with pytest.raises(KeyError):
            bench.lookup(output, absent)


def test_speedrun_figures_pick_the_best_aligned_stage():
    evals = {stage: {"arith": {"accuracy": a}, "spam": {"accuracy": b}}
             for stage, a, b in (("base", 0.0, 0.1), ("sft", 0.5, 0.6), ("dpo", 0.6, 0.7), ("ppo", 0.5, 0.6))}
    figures = bench.speedrun_figures({"evals": evals, "wall_s": 399.0, "stages": {"sft": {"wall_s": 100.0}},
                                      "targeted": {}})
    assert figures["aligned_stage"] == "dpo" and figures["aligned_mean_accuracy"] == pytest.approx(0.65)
    assert figures["wall_s"] == 399.0 and figures["stage_wall_s"] == {"sft": 100.0}


def test_the_real_table_covers_the_benchmarks():
    names = [b.name for b in bench.BENCHMARKS]
    assert len(names) == len(set(names))
    scripts = {Path(b.command[0]).stem for b in bench.BENCHMARKS if b.command[0].endswith(".py")}
    assert {p.stem for p in (REPO / "benchmarks").glob("*.py")} - NOT_ROWS <= scripts
    assert names[-1] == "speedrun"  # the longest last, so a partial run has the rest
    for benchmark in bench.BENCHMARKS:
        assert benchmark.rows
        for row in benchmark.rows:
            assert all(goal.op in bench.OPERATORS for goal in row.goals)
