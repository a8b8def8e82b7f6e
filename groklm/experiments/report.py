"""The speedrun's report: report.json, and report.md with its tables, plot and sample conversations.

Everything here formats figures that speedrun.py measured; nothing is trained or evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from groklm.rundir import atomic_path, write_json

BESIDE_TITLES = {"evals_heldout": "mean, held-out wordings"}  # the column a `beside` table's mean gets


def eval_table(report: dict, key: str = "evals", field: str = "accuracy", beside: str | None = None) -> str:
    """A markdown table: one row per stage, one column per task (greedy accuracy on the test split,
    or another `field` of another table of the report, e.g. "sampled_evals" / "mean_score"), then
    the mean over tasks. `beside` names another table whose mean goes in a last column of its own
    (the held-out wordings' accuracy next to the test accuracy, never averaged into it)."""
    evals = report[key]
    tasks = list(next(iter(evals.values())))
    percent = field == "accuracy"
    cell = lambda v: f"{100 * v:.0f}%" if percent else f"{v:.3f}"  # noqa: E731
    mean_cell = lambda v: f"{100 * v:.1f}%" if percent else f"{v:.3f}"  # noqa: E731
    header = "| stage | " + " | ".join(tasks) + " | mean |" + (f" {BESIDE_TITLES[beside]} |" if beside else "")
    lines = [header, "| --- |" + " --- |" * (len(tasks) + 1 + bool(beside))]
    for stage, results in evals.items():
        row = f"| {stage} | " + " | ".join(cell(results[t][field]) for t in tasks) + f" | {mean_cell(task_mean(results, field))} |"
        if beside:
            other = report[beside].get(stage)
            row += f" {mean_cell(task_mean(other, field)) if other else 'not measured'} |"
        lines.append(row)
    return "\n".join(lines)


def task_mean(results: dict, field: str) -> float:
    """The mean of `field` over a stage's tasks."""
    return sum(r[field] for r in results.values()) / len(results)


def plot_evals(report: dict, path: Path) -> None:
    """Greedy accuracy and sampled expected score per task, a bar per stage, side by side."""
    panels = [(report["evals"], "accuracy", "greedy accuracy (%)", 100),
              (report["sampled_evals"], "mean_score", "expected score, sampled at T=1", 1)]
    fig = Figure(figsize=(14, 4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, (evals, field, label, scale) in zip(axes, panels):
        tasks = list(next(iter(evals.values())))
        width = 0.8 / len(evals)
        for i, (stage, results) in enumerate(evals.items()):
            ax.bar([t + i * width for t in range(len(tasks))], [scale * results[t][field] for t in tasks], width, label=stage)
        ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))], tasks)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("evals by stage, test split")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_report(out: Path, report: dict) -> None:
    """out/report.json (the figures) and out/report.md (tables, plots, samples, conversations)."""
    write_json(out / "report.json", report)
    s = report["stages"]
    tok, data, base, sft, rm, dpo, ppo = (s[k] for k in ("tokenizer", "data", "pretrain", "sft", "reward", "dpo", "ppo"))
    rel = lambda p: Path(p).relative_to(out)  # noqa: E731
    lines = [
        "# groklm speedrun",
        "",
        f"Total wall time: {report['wall_s']:.0f} s.",
        "",
        "| stage | result | wall time |",
        "| --- | --- | --- |",
        f"| tokenizer | BPE, {tok['vocab_size']} tokens | {tok['wall_s']:.1f} s |",
        f"| data | {data['train_tokens']:,} train / {data['val_tokens']:,} val tokens, "
        f"{data['bytes_per_token']:.2f} bytes/token | {data['wall_s']:.1f} s |",
        f"| pretrain | {base['params']:,} params, {base['steps']} steps, val loss {base['val_loss']:.3f} "
        f"(step {base['first_eval_step']}: {base['val_loss_first_eval']:.3f}; uniform guess: {base['uniform_loss']:.3f}), "
        f"{base['tokens_per_sec']:,.0f} tokens/s | {base['wall_s']:.1f} s |",
        f"| sft | {sft['steps']} steps, val loss on assistant tokens {sft['val_loss']:.3f} | {sft['wall_s']:.1f} s |",
        f"| reward model | {rm['steps']} steps, held-out pairwise accuracy {100 * rm['val_accuracy']:.1f}% "
        f"(chance 50%), margin {rm['val_rewards_margins']:.2f} | {rm['wall_s']:.1f} s |",
        f"| dpo | {dpo['steps']} steps, held-out accuracy {100 * dpo['val_accuracy']:.1f}%, margin "
        f"{dpo['val_rewards_margins']:.3f} (chosen {dpo['val_rewards_chosen']:.3f}, rejected "
        f"{dpo['val_rewards_rejected']:.3f}) | {dpo['wall_s']:.1f} s |",
        f"| ppo | {ppo['steps']} steps, verifier score {ppo['score_start']:.3f} -> {ppo['score_end']:.3f}, "
        f"KL to SFT {ppo['kl_end']:.3f} | {ppo['wall_s']:.1f} s |",
        f"| eval | every stage on {next(iter(report['evals']['base'].values()))['count']} test problems per task "
        f"| {s['eval']['wall_s']:.1f} s |",
        "",
        "## Accuracy on held-out test problems (greedy)",
        "",
        "The mean is over the tasks' test problems, in the wordings the training data uses. The last "
        "column is the mean on the heldout split: test problems in wordings (templates, instructions, "
        "emails) that no training record uses; the gap between the two is what the model recalls of "
        "its templates rather than knows of its tasks.",
        "",
        eval_table(report, beside="evals_heldout"),
        "",
        "Accuracy per task on held-out wordings (greedy):",
        "",
        eval_table(report, "evals_heldout"),
        "",
        *targeted_lines(report),
        "![evals by stage](evals.png)",
        "",
        "## Curves",
        "",
        f"![pretraining loss]({rel(base['loss_plot'])}) ![SFT loss]({rel(sft['loss_plot'])})",
        f"![reward model loss]({rel(rm['loss_plot'])}) ![DPO loss]({rel(dpo['loss_plot'])})",
        f"![PPO reward and KL]({rel(ppo['plot'])})",
        "",
        "## Samples from the base model",
        "",
    ]
    for sample in report["samples"]:
        lines += [f"Prompt {json.dumps(sample['prompt'])}, seed {sample['seed']}:", "", "```",
                  sample["prompt"] + sample["completion"], "```", ""]
    lines += conversation_lines(report["conversations"])
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


def targeted_lines(report: dict) -> list[str]:
    """The targeted metric per stage (sampled replies), then the per-task table behind it."""
    t, s = report["targeted"], report["stages"]
    aligned = [stage for stage in t if stage not in ("metric", "sft")]
    share = f"{100 * s['sft']['chatty_demonstrations']:.0f}%"
    return [
        "## The targeted metric: sampled replies",
        "",
        f"{share} of the SFT demonstrations answer in a wordier style than the task asks for; DPO and PPO "
        "are to move the model to the wanted format. Measured on the same test problems, "
        f"{next(iter(report['sampled_evals']['sft'].values()))['count']} replies per task sampled at temperature 1: "
        "the expected verifier score (mean over tasks), and the KL of the replies from the SFT model.",
        "",
        "| stage | expected score | gain over SFT | accuracy of a sample | KL from SFT (nats/reply) |",
        "| --- | --- | --- | --- | --- |",
        f"| sft | {t['sft']['score']:.3f} | | {100 * t['sft']['accuracy']:.1f}% | 0 |",
        *(f"| {stage} | {t[stage]['score']:.3f} | {t[stage]['gain']:+.3f} | {100 * t[stage]['accuracy']:.1f}% "
          f"| {t[stage]['kl_from_sft']:.3f} |" for stage in aligned),
        "",
        "Expected score per task:",
        "",
        eval_table(report, "sampled_evals", "mean_score"),
        "",
    ]


def conversation_lines(conversations: list[dict]) -> list[str]:
    """Each task's first test problem and what every chat stage replied (with the verifier's score)."""
    lines = ["## Sample conversations (test problems)", ""]
    for conversation in conversations:
        turns = " / ".join(f"{m['role']}: {m['content']}" for m in conversation["messages"]).replace("\n", " ")
        lines += [f"**{conversation['task']}**: {turns}", "", f"Expected: `{conversation['answer']}`", "",
                  "| stage | greedy reply | score | sampled reply (T=1) | score |", "| --- | --- | --- | --- | --- |"]
        for stage, r in conversation["replies"].items():
            lines.append(f"| {stage} | {table_cell(r['greedy'])} | {r['greedy_score']:.2f} "
                         f"| {table_cell(r['sampled'])} | {r['sampled_score']:.2f} |")
        lines.append("")
    return lines


def table_cell(text: str) -> str:
    """Text for a markdown table cell: one line, no pipes breaking the table."""
    return "`" + text.replace("\n", " ").replace("|", "\\|").replace("`", "'") + "`" if text.strip() else "(empty)"
