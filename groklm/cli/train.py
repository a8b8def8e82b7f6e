"""The training stages from the shell: `groklm pretrain | sft | reward | dpo | kto | spin | ppo | seq2seq`.

Every stage runs in one process, or in many under torchrun
(`torchrun --nproc_per_node=N -m groklm pretrain ...`); only rank 0 prints the summary.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from groklm.errors import ConfigError
from groklm.train.config import PRESETS, add_training_arguments, parse_set_args
from groklm.train.rl.config import ALGOS

# The choices of --loss, as groklm.train.dpo.LOSSES (not imported: torch);
# tests/test_cli_light.py checks that they agree.
DPO_LOSSES = ("sigmoid", "ipo")


def register(subparsers) -> None:
    register_pretrain(subparsers)
    register_sft(subparsers)
    register_reward(subparsers)
    register_dpo(subparsers)
    register_kto(subparsers)
    register_spin(subparsers)
    register_ppo(subparsers)
    register_seq2seq(subparsers)


def is_rank_zero() -> bool:
    """Under torchrun every process runs the command; one prints."""
    return int(os.environ.get("RANK", 0)) == 0


# ---- pretrain -------------------------------------------------------------------------------


def register_pretrain(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="train a GPT from token shards (one process, or many under torchrun)",
        description="Pretrain a GPT on a data directory made by `groklm data prepare`. Any GPTConfig "
        "or TrainConfig field can be set with --set key=value. For data parallelism, launch with "
        "`torchrun --nproc_per_node=N -m groklm pretrain ...`. --init-from RUN continues pretraining a GPT "
        "run on your text (prepared with RUN's tokenizer); add --set lora_rank=16 lora_alpha=32 "
        "lora_targets=attn,mlp to train only LoRA adapters on it (groklm merge folds them in).",
    )
    parser.add_argument("--data", metavar="DIR", help="prepared data directory (optional with --resume)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    parser.add_argument("--preset", metavar="NAME", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--init-from", metavar="RUN", help="start from this GPT run's weights and shape "
                        "(continued pretraining) instead of random weights")
    add_training_arguments(parser, "override a model or training setting, e.g. --set max_iters=500 n_layer=2")
    parser.add_argument("--sequence-parallel", dest="overrides", action="append_const", const="sequence_parallel=true",
                        help="under torchrun, give each process a slice of every sequence instead of its own sequences "
                        "(ring attention; for sequences too long for one device): short for --set sequence_parallel=true")
    parser.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> None:
    from groklm.train.pretrain import pretrain

    run = pretrain(args.data, args.out, args.preset, parse_set_args(args.overrides), resume=args.resume,
                   progress=not args.no_progress, init_from=args.init_from)
    if is_rank_zero():
        print_summary(run)


def last_metrics(run: Path) -> dict | None:
    """The last line of a run's metrics.jsonl, or None before the first."""
    from groklm.rundir import METRICS_FILE
    from groklm.train.plots import read_metrics

    records = read_metrics(Path(run) / METRICS_FILE)
    return records[-1] if records else None


def print_summary(run: Path) -> None:
    last = last_metrics(run)
    if last:
        val = f", val loss {last['val_loss']:.4f}" if "val_loss" in last else ""
        print(f"{run}: step {last['step']}, loss {last['loss']:.4f}{val}, {last['elapsed']:.0f}s")


# ---- sft ------------------------------------------------------------------------------------


def register_sft(subparsers) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning: teach a run to answer chats (ChatML)",
        description="Fine-tune the model of RUN (pretrained, imported or already fine-tuned) on "
        "conversations, training only on what the assistant says. Any TrainConfig field (and dropout) "
        "can be set with --set key=value; the model's shape and tokenizer come from RUN. "
        "--set lora_rank=16 lora_alpha=32 lora_targets=attn,mlp trains LoRA adapters on the frozen "
        "base instead, and the run stores only them (groklm merge folds them in).",
    )
    parser.add_argument("run", nargs="?", metavar="RUN", help="the base run directory (not needed with --resume)")
    parser.add_argument("--data", metavar="FILE.jsonl|synthetic[:task,task]",
                        help='{"messages": [...]} per line, or groklm\'s synthetic tasks (optional with --resume)')
    parser.add_argument("--val", metavar="FILE.jsonl", help="validation chats (default: hold out 5%% of --data)")
    parser.add_argument("--out", required=True, metavar="RUN2", help="the new run directory")
    parser.add_argument("--synthetic-n", type=int, default=1000, metavar="N", help="training chats per synthetic task (default 1000)")
    parser.add_argument("--synthetic-chatty", type=float, default=0.0, metavar="SHARE",
                        help="share of synthetic demonstrations answered in a wordier style than the task asks "
                        "for, in [0, 1] (default 0; the speedrun uses 0.3)")
    parser.add_argument("--skip-bad-lines", action="store_true", help="skip malformed records (with a warning) instead of stopping")
    add_training_arguments(parser)
    parser.set_defaults(func=run_sft)


def run_sft(args: argparse.Namespace) -> None:
    from groklm.train.sft import sft

    if args.synthetic_n < 1:
        raise ConfigError(f"--synthetic-n must be at least 1, got {args.synthetic_n}")
    run = sft(args.run, args.data, args.out, parse_set_args(args.overrides), resume=args.resume,
              progress=not args.no_progress, val_data=args.val, skip_bad_lines=args.skip_bad_lines,
              synthetic_n=args.synthetic_n, synthetic_chatty=args.synthetic_chatty)
    if is_rank_zero():
        print_summary(run)


# ---- preference stages: reward, dpo, kto ----------------------------------------------------

PAIRS_HELP = ("preference pairs: a JSONL file ({prompt, chosen, rejected} per line), synthetic[:tasks], or "
              "Llama 2's two sets synthetic-helpful[:tasks] / synthetic-harmless[:tasks]")


def add_pair_arguments(parser: argparse.ArgumentParser, data_help: str = PAIRS_HELP) -> None:
    """Arguments every preference stage takes."""
    parser.add_argument("run", nargs="?", metavar="RUN", help="the GPT run to start from (optional with --resume)")
    parser.add_argument("--data", metavar="FILE|synthetic[:tasks]", help=data_help)
    parser.add_argument("--val", metavar="FILE", help="held-out data (default: synthetic's test split, or a tenth of --data)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    parser.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines of --data instead of stopping")
    add_training_arguments(parser)


def print_pair_summary(run: Path) -> None:
    last = last_metrics(run)
    if last:
        val = f", val accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else ""
        print(f"{run}: step {last['step']}, loss {last['loss']:.4f}, accuracy {last['accuracy']:.3f}{val}")


def register_reward(subparsers) -> None:
    parser = subparsers.add_parser(
        "reward",
        help="train a reward model (scalar head on a GPT) from preference pairs",
        description="Train a reward model: the transformer of RUN plus a scalar head read at the last token, "
        "fitted so that chosen replies score higher than rejected ones. Logs pairwise accuracy on train and "
        "held-out pairs. Load the result with RewardModel.from_run(DIR).",
    )
    add_pair_arguments(parser)
    parser.add_argument("--margin", type=float, default=None, help="required reward gap in the loss (default 0)")
    parser.set_defaults(func=run_reward)


def run_reward(args: argparse.Namespace) -> None:
    from groklm.train.reward import train_reward

    out = train_reward(args.run, args.data, args.out, val=args.val, margin=args.margin,
                       overrides=parse_set_args(args.overrides), skip_bad_lines=args.skip_bad_lines,
                       resume=args.resume, progress=not args.no_progress)
    if is_rank_zero():
        print_pair_summary(out)


def register_dpo(subparsers) -> None:
    parser = subparsers.add_parser(
        "dpo",
        help="align a GPT to preference pairs with DPO (no reward model, no RL)",
        description="Direct Preference Optimization: train a copy of RUN to raise the log-probability of chosen "
        "replies over rejected ones, relative to a frozen copy of RUN. Logs implicit rewards, margins and "
        "accuracy on train and held-out pairs. The result is a normal GPT run.",
    )
    add_pair_arguments(parser)
    parser.add_argument("--beta", type=float, default=None, help="strength of the pull towards RUN (default 0.1)")
    parser.add_argument("--loss", dest="loss_type", choices=DPO_LOSSES, default=None, help="sigmoid (DPO, default) or ipo")
    parser.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                        help="assumed fraction of flipped labels, in [0, 0.5) (conservative DPO; default 0)")
    parser.add_argument("--sft-weight", type=float, default=None, metavar="ALPHA",
                        help="add ALPHA x the chosen replies' per-token NLL, keeping them likely (RPO; default 0)")
    parser.set_defaults(func=run_dpo)


def run_dpo(args: argparse.Namespace) -> None:
    from groklm.train.dpo import train_dpo

    out = train_dpo(args.run, args.data, args.out, val=args.val, beta=args.beta, loss_type=args.loss_type,
                    label_smoothing=args.label_smoothing, sft_weight=args.sft_weight, overrides=parse_set_args(args.overrides),
                    skip_bad_lines=args.skip_bad_lines, resume=args.resume, progress=not args.no_progress)
    if is_rank_zero():
        print_pair_summary(out)


def register_kto(subparsers) -> None:
    parser = subparsers.add_parser(
        "kto",
        help="align a GPT to replies labelled good or bad one at a time (KTO: thumbs up/down, no pairs needed)",
        description="Kahneman-Tversky Optimization: train a copy of RUN to raise the log-probability of desirable "
        "replies and lower that of undesirable ones, each relative to a frozen copy of RUN and measured from the "
        "batch's estimate of the KL between the two. Needs examples of both labels. Logs the KL estimate, implicit "
        "rewards and the share of replies on the right side of it. The result is a normal GPT run.",
    )
    add_pair_arguments(parser, "labelled replies: a JSONL file ({prompt, completion, label: true|false} per line; "
                       "{prompt, chosen, rejected} pairs count as one of each) or synthetic tasks")
    parser.add_argument("--beta", type=float, default=None, help="strength of the pull towards RUN (default 0.1)")
    parser.add_argument("--desirable-weight", type=float, default=None, metavar="LAMBDA_D",
                        help="weight of the desirable examples' loss (default 1)")
    parser.add_argument("--undesirable-weight", type=float, default=None, metavar="LAMBDA_U",
                        help="weight of the undesirable examples' loss (default 1)")
    parser.set_defaults(func=run_kto)


def run_kto(args: argparse.Namespace) -> None:
    from groklm.train.kto import train_kto

    out = train_kto(args.run, args.data, args.out, val=args.val, beta=args.beta, desirable_weight=args.desirable_weight,
                    undesirable_weight=args.undesirable_weight, overrides=parse_set_args(args.overrides),
                    skip_bad_lines=args.skip_bad_lines, resume=args.resume, progress=not args.no_progress)
    if is_rank_zero():
        print_pair_summary(out)


def register_spin(subparsers) -> None:
    parser = subparsers.add_parser(
        "spin",
        help="self-play fine-tuning: improve an SFT model with its SFT data alone (SPIN)",
        description="SPIN: in each iteration the current model answers the SFT data's prompts, and DPO's loss "
        "trains it to prefer the data's replies over its own, with the previous iteration as the reference. "
        "Replies already equal to the data's are dropped (and counted: SPIN converges when the model writes the "
        "data's replies). Writes OUT/iter-1, OUT/iter-2, ... (normal GPT runs) and OUT/summary.jsonl; "
        "--resume skips finished iterations. --set applies to every iteration's training.",
    )
    add_pair_arguments(parser, "SFT conversations: a JSONL file ({messages: [...]} per line) or synthetic tasks")
    parser.add_argument("--iterations", type=int, default=None, help="self-play iterations (default 3)")
    parser.add_argument("--prompts", type=int, default=None, metavar="N",
                        help="SFT conversations the model answers in each iteration (default 1000)")
    parser.add_argument("--beta", type=float, default=None, help="strength of the pull towards the previous iteration (default 0.1)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="the model's replies: sampled at this temperature (default 1), or 0: greedy")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N", help="longest reply the model writes (default 64)")
    parser.add_argument("--synthetic-chatty", type=float, default=None, metavar="SHARE",
                        help="share of wordier synthetic demonstrations, as `groklm sft` took it (default 0)")
    parser.set_defaults(func=run_spin)


def run_spin(args: argparse.Namespace) -> None:
    from groklm.train.spin import train_spin

    summary = train_spin(args.run, args.data, args.out, iterations=args.iterations, prompts=args.prompts, val=args.val,
                         beta=args.beta, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                         synthetic_chatty=args.synthetic_chatty, overrides=parse_set_args(args.overrides),
                         skip_bad_lines=args.skip_bad_lines, resume=args.resume, progress=not args.no_progress)
    for record in summary:
        figures = (f", loss {record['loss_start']:.4f} -> {record['loss_end']:.4f}, val margin {record['val_margin']:.3f}"
                   if "val_margin" in record else "")
        print(f"iteration {record['iteration']}: {record['pairs']} pairs, {record['dropped']} replies already the "
              f"data's{figures}: {record['run']}")


# ---- ppo ------------------------------------------------------------------------------------


def register_ppo(subparsers) -> None:
    parser = subparsers.add_parser(
        "ppo",
        help="RLHF: improve a chat model with PPO or GRPO against a reward model or verifier",
        description="Fine-tune RUN with reinforcement learning: sample answers to prompts, score them "
        "(a reward model run, or the synthetic tasks' verifiers), and update with the clipped PPO "
        "objective plus a KL penalty to RUN. Writes a normal GPT run (stage ppo/grpo); with --set lora_rank=N "
        "only LoRA adapters train (the KL is to RUN itself: the policy with its adapters off). Any RLConfig "
        "or TrainConfig field can be set with --set key=value (e.g. max_iters, lr, prompts_per_step, "
        "group_size, max_new_tokens, ppo_epochs, clip_eps, gamma, lam).",
    )
    parser.add_argument("run", nargs="?", metavar="RUN", help="the run to start from (an SFT model; optional with --resume)")
    parser.add_argument("--reward", default="verifier", metavar="RM_DIR|verifier|helpful=RM,harmless=RM",
                        help="reward model run, 'verifier' (default), or Llama 2's two reward models "
                        "helpful=RM_DIR,harmless=RM_DIR[,threshold=0.15]: each answer gets the harmless model's score "
                        "where its prompt is tagged unsafe or that score's sigmoid is under the threshold, else the "
                        "helpful model's; whitened over the batch")
    parser.add_argument("--prompts", default="synthetic", metavar="SPEC", help="synthetic[:task,task] (default synthetic) or FILE.jsonl")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    parser.add_argument("--algo", choices=ALGOS, help="ppo (value head + GAE, default) or grpo (group-relative, no value head)")
    parser.add_argument("--kl-coef", type=float, metavar="BETA", help="weight of the KL to RUN (default 0.05)")
    add_training_arguments(parser, "override an RL or training setting, e.g. --set max_iters=100 kl_coef=0.1")
    parser.set_defaults(func=run_ppo)


def run_ppo(args: argparse.Namespace) -> None:
    from groklm.train.rl.ppo import train_ppo

    run = train_ppo(args.run, args.out, args.reward, args.prompts, args.algo, args.kl_coef,
                    parse_set_args(args.overrides), resume=args.resume, progress=not args.no_progress)
    last = last_metrics(run)
    if last and is_rank_zero():
        print(f"{run}: step {last['step']}, reward {last['score']:.3f}, kl {last['kl']:.3f}, {last['elapsed']:.0f}s")


# ---- seq2seq --------------------------------------------------------------------------------


def register_seq2seq(subparsers) -> None:
    parser = subparsers.add_parser(
        "seq2seq",
        help="train and measure a GRU encoder-decoder, with and without attention, on synthetic tasks",
        description="Sequence to sequence on a synthetic transduction task (reverse, translate): where a "
        "fixed-size hidden state breaks down with input length, and attention holds.",
    )
    actions = parser.add_subparsers(dest="seq2seq_command", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train",
        help="train an encoder-decoder into a run directory",
        description="Keys for --set: the task (task=reverse|translate, n_symbols, min_len, max_len), the model "
        "(n_embd, n_hidden, attention=true|false) and any training setting (max_iters, lr, ...).",
    )
    train.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    add_training_arguments(train, "override a setting, e.g. --set task=translate max_len=30 attention=false")
    train.set_defaults(func=run_seq2seq_train)

    evaluate = actions.add_parser(
        "eval",
        help="exact-match accuracy by input length (JSON + plot) and the attention alignment heat map",
        description="Greedy-decode fresh random inputs of every length and count exact matches. Several RUNs "
        "are drawn on one plot. Writes OUT/accuracy.json, OUT/accuracy.png and, for attention runs, "
        "OUT/alignment_<run>.png.",
    )
    evaluate.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    evaluate.add_argument("--out", type=Path, help="where the results go (default: the first RUN)")
    evaluate.add_argument("--n", type=int, default=200, help="inputs per length (default 200)")
    evaluate.add_argument("--max-len", type=int, help="longest input (default: the longest trained on; "
                          "more measures generalisation to unseen lengths)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=run_seq2seq_eval)


def run_seq2seq_train(args: argparse.Namespace) -> None:
    from groklm.train.seq2seq import train_seq2seq

    run = train_seq2seq(args.out, parse_set_args(args.overrides), resume=args.resume, progress=not args.no_progress)
    last = last_metrics(run)
    print(f"{run}: step {last['step']}, val loss {last.get('val_loss', float('nan')):.4f}, "
          f"val token accuracy {last.get('val_token_accuracy', float('nan')):.3f}")


def run_seq2seq_eval(args: argparse.Namespace) -> None:
    from groklm.train.seq2seq import ACCURACY_FILE, ACCURACY_PLOT, evaluate_runs

    out = args.out or args.runs[0]
    results = evaluate_runs(args.runs, out, args.n, args.max_len, args.seed)
    print(accuracy_table(results))
    print(f"wrote {out / ACCURACY_FILE}, {out / ACCURACY_PLOT}"
          + "".join(f", {r['alignment_plot']}" for r in results.values() if "alignment_plot" in r))


def accuracy_table(results: dict) -> str:
    """A plain-text table: one row per length, one column per run."""
    names = list(results)
    lengths = sorted({int(k) for r in results.values() for k in r["exact_match"]})
    rows = ["length  " + "  ".join(f"{name:>14}" for name in names)]
    for length in lengths:
        cells = [results[name]["exact_match"].get(str(length)) for name in names]
        rows.append(f"{length:>6}  " + "  ".join(f"{c:>14.3f}" if c is not None else f"{'':>14}" for c in cells))
    return "\n".join(rows)
