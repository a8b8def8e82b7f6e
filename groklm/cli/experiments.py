"""The experiments from the shell: `groklm speedrun` (the main job), `groklm compare`
(GPT, RNN, LSTM, GRU, MoE, Mamba, RWKV and a Jamba-style hybrid at equal parameters and seconds)
and `groklm scaling` (a scaling law fitted to a grid of sizes and token counts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from groklm.errors import ConfigError
from groklm.train.config import parse_set_args

# compare's --models: groklm.experiments.compare.MODELS and DEFAULT_MODELS (not imported: torch);
# tests/test_cli_light.py checks that they agree.
COMPARE_MODELS_HELP = "comma-separated, from gpt, rnn, lstm, gru, moe, mod, mamba, rwkv, jamba (default gpt,rnn,lstm,gru)"


def register(subparsers) -> None:
    register_speedrun(subparsers)
    register_compare(subparsers)
    register_scaling(subparsers)


# ---- speedrun -------------------------------------------------------------------------------


def register_speedrun(subparsers) -> None:
    parser = subparsers.add_parser(
        "speedrun",
        help="the main job: tokenizer -> pretraining -> SFT -> reward model -> DPO, PPO -> evals -> report",
        description="Train a tokenizer and a small GPT on the Python standard library's source, teach it "
        "the synthetic chat tasks (SFT), align it (reward model, DPO, PPO) and evaluate every stage on "
        "held-out problems; offline, on a CPU. Writes DIR/report.md and DIR/report.json.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where every stage's directory and the report go")
    parser.add_argument("--preset", default="tiny", help="pretraining preset (default: tiny)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default: 4096)")
    parser.add_argument("--eval-n", type=int, default=100, help="test problems per task in the evals (default: 100)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a setting: KEY for pretraining (e.g. max_iters=200), "
                        "STAGE.KEY for sft, reward, dpo or ppo (e.g. sft.max_iters=300)")
    parser.add_argument("--force", action="store_true", help="replace the stage directories of an earlier speedrun in DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_speedrun)


def run_speedrun(args: argparse.Namespace) -> None:
    from groklm.experiments.report import eval_table
    from groklm.experiments.speedrun import CHAT_STAGES, speedrun, stage_overrides

    overrides = stage_overrides(parse_set_args(args.overrides))
    report = speedrun(args.out, args.preset, args.vocab_size, overrides, not args.no_progress, args.force, args.eval_n)
    print(f"\nreport: {Path(args.out) / 'report.md'} ({report['wall_s']:.0f}s)")
    print("greedy accuracy on the test split (last column: held-out wordings):")
    print(eval_table(report, beside="evals_heldout"))
    targeted = report["targeted"]
    print("targeted metric (expected verifier score of a sampled reply): sft {:.3f}, ".format(targeted["sft"]["score"])
          + ", ".join(f"{stage} {targeted[stage]['score']:.3f} ({targeted[stage]['gain']:+.3f}, KL from SFT "
                      f"{targeted[stage]['kl_from_sft']:.2f})" for stage in CHAT_STAGES[1:]))


# ---- compare --------------------------------------------------------------------------------


def register_compare(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train GPT, RNN, LSTM, GRU (and MoE, Mamba, RWKV, Jamba) at equal parameters and seconds; report the gap",
        description="Train each model at (about) --budget-params parameters for (about) each wall-clock "
        "budget on the same data, each family at the peak learning rate a search at the smallest budget "
        "chose, then write OUT/report.md and OUT/report.json: val loss against time, tokens seen, the "
        "budget and parameters x tokens, where the GPT overtakes each recurrent model, training tokens/s, "
        "samples. Runs go to OUT/runs/<model>-<budget>s.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared data (`groklm data prepare`)")
    parser.add_argument("--budget-params", required=True, type=int, metavar="N",
                        help="parameters per model (active parameters for moe)")
    budgets = parser.add_mutually_exclusive_group(required=True)
    budgets.add_argument("--budgets", metavar="S1,S2,...", help="training seconds per model, one run at each (e.g. 30,90,270)")
    budgets.add_argument("--budget-seconds", type=float, metavar="S", help="training seconds per model: one budget")
    parser.add_argument("--lr-search", metavar="LR1,LR2,...|off",
                        help="peak learning rates tried for every family at the smallest budget (default: each "
                        "family's own rate halved, kept and doubled); off: each family's own rate, no search")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--models", help=COMPARE_MODELS_HELP)
    parser.add_argument("--moe-experts", type=int, default=8, help="experts per MoE layer (default 8)")
    parser.add_argument("--moe-top-k", type=int, default=2, help="experts per token (default 2)")
    parser.add_argument("--prompt", default=None, help="text the samples continue (default: the start of the val split)")
    parser.add_argument("--sample-tokens", type=int, default=200, help="tokens sampled from each model (default 200)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a training setting for every model (e.g. batch_size=32), or for one (gru.lr=3e-3); "
                        "or block_size, dropout, n_layer for all")
    parser.add_argument("--force", action="store_true", help="replace an earlier comparison in OUT")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> None:
    from groklm.experiments.compare import compare, summary_table

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models is not None else None
    budgets = [args.budget_seconds] if args.budgets is None else parse_numbers(args.budgets, "--budgets")
    lr_grid = None if args.lr_search is None else [] if args.lr_search == "off" else parse_numbers(args.lr_search, "--lr-search")
    report = compare(args.data, args.budget_params, budgets, args.out, models, lr_grid, args.moe_experts,
                     args.moe_top_k, parse_set_args(args.overrides), args.prompt, args.sample_tokens, args.force,
                     not args.no_progress)
    print(summary_table(report))
    print(f"\n{report['verdict']}")
    if report["crossover_sentence"]:
        print(report["crossover_sentence"])
    print(f"report: {Path(args.out) / 'report.md'}")


# ---- scaling --------------------------------------------------------------------------------


def register_scaling(subparsers) -> None:
    parser = subparsers.add_parser(
        "scaling",
        help="a grid of GPT sizes x token counts in a time budget: fit L(N, D), predict the compute-optimal size",
        description="Train GPTs of several sizes (non-embedding parameters N) for several token counts D "
        "within --budget minutes, fit L(N, D) = E + A/N^alpha + B/D^beta, train the compute-optimal size "
        "it predicts and measure it, and train one size on the same tokens repeated 1, 2, 4, ... times. "
        "Writes OUT/report.md, OUT/report.json and plots; runs go to OUT/runs/.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared data (`groklm data prepare`)")
    parser.add_argument("--budget", required=True, type=float, metavar="MINUTES", help="wall-clock minutes for all the runs")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--sizes", metavar="N1,N2,...",
                        help="non-embedding parameter counts (default 10000,25000,60000,150000,400000: a CPU's)")
    parser.add_argument("--repeats", metavar="R1,R2,...", help="times the data is repeated (default 1,2,4,8,16)")
    parser.add_argument("--predict-compute", type=float, metavar="FLOPS",
                        help="compute (6 N D) of the compute-optimal run (default: 4x the grid's largest run)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a training setting for every run (e.g. lr=3e-3 batch_size=32), or block_size")
    parser.add_argument("--force", action="store_true", help="replace an earlier study in OUT")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_scaling)


def run_scaling(args: argparse.Namespace) -> None:
    from groklm.experiments.scaling import scaling

    sizes = None if args.sizes is None else [int(n) for n in parse_numbers(args.sizes, "--sizes")]
    repeats = None if args.repeats is None else [int(r) for r in parse_numbers(args.repeats, "--repeats")]
    report = scaling(args.data, args.budget, args.out, sizes, repeats, args.predict_compute,
                     parse_set_args(args.overrides), args.force, not args.no_progress)
    law, optimal = report["law"], report["compute_optimal"]
    print(f"L(N, D) = {law['E']:.3f} + {law['A']:.4g}/N^{law['alpha']:.3f} + {law['B']:.4g}/D^{law['beta']:.3f} "
          f"(RMSE {law['rmse']:.4f} nats over {len(report['runs'])} runs)")
    print(f"compute-optimal at {optimal['compute']:.3g} FLOPs: N = {optimal['N']:,.0f}, D = {optimal['D']:,.0f}, "
          f"predicted {optimal['loss']:.4f}; " + (f"measured {optimal['measured']:.4f}" if optimal["trained"] else optimal["note"]))
    print("val loss by repeats: " + ", ".join(f"r={p['repeats']}: {p['val_loss']:.4f}" for p in report["repetition"]["points"]))
    print(f"report: {Path(args.out) / 'report.md'}")


def parse_numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers (e.g. 30,90,270); got {text!r}") from None
