"""`groklm agent`, `groklm evals`, `groklm traces` and `groklm distill`: the application layer from the shell.

    groklm agent --backend local:runs/chat "What is 17 * 23 + 4?"
    groklm evals cases.jsonl --backend local:runs/chat --prompt "Spam or not spam?\\n{input}" --check exact
    groklm traces --last 10
    groklm traces show 3f2a9c
    groklm traces export --format sft --feedback rated --redact email --out sft.jsonl

`evals` is deliberately not `eval`: `groklm eval RUN` is the model harness (a run on the
synthetic tasks, held-out test split); `groklm evals DATA` scores an application (a backend
plus a prompt, on your own JSONL cases, with your checks) and compares variants side by side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict

from groklm.errors import ConfigError
from groklm.train.config import parse_set_args

CHECKS = ("exact", "contains", "schema", "python", "judge")
# The --student choices and the teacher's label file, as groklm.apps.distill defines them (not
# imported: numpy, torch); tests/test_cli_light.py checks that they agree.
DISTILL_STUDENTS = ("minilm", "scratch")
DISTILL_LABELS_FILE = "teacher_labels.jsonl"


def register(subparsers) -> None:
    agent = subparsers.add_parser(
        "agent", help="answer a question with a tool-using agent (ReAct or native tool calls), steps printed live",
        description="Run an agent on BACKEND (local:RUN, hf:DIR or openai:URL#MODEL) with the built-in calculator, "
        "a RAG index's search and your own Python functions as tools. Prints each step as it happens.")
    agent.add_argument("question", help="the question")
    agent.add_argument("--backend", required=True, metavar="SPEC", help="local:RUN_DIR, hf:CHECKPOINT_DIR or openai:BASE_URL#MODEL")
    agent.add_argument("--mode", choices=["auto", "react", "native"], default="auto",
                       help="react: Thought/Action/Observation text; native: tool_calls (default auto: native where the backend has it)")
    agent.add_argument("--tool", action="append", default=[], metavar="MODULE:FUNCTION",
                       help="a typed Python function to offer as a tool (repeatable)")
    agent.add_argument("--rag", metavar="INDEX", help="offer search_documents over this groklm RAG index")
    agent.add_argument("--no-calculator", action="store_true", help="do not offer the calculator")
    agent.add_argument("--system", metavar="TEXT", help="system message")
    agent.add_argument("--max-steps", type=int, default=8, help="most model calls (default 8)")
    agent.add_argument("--max-time", type=float, default=120.0, help="seconds before giving up (default 120)")
    agent.add_argument("--max-tokens", type=int, default=256, help="longest model turn in tokens (default 256)")
    agent.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    agent.add_argument("--json", action="store_true", help="print the whole result (steps, messages) as JSON at the end")
    add_action_arguments(agent)
    agent.set_defaults(func=run_agent)

    evals = subparsers.add_parser(
        "evals", help="score an application (backend + prompt) on a JSONL dataset; compare two side by side",
        description="Run each case of DATA (JSONL: {\"input\": ..., \"expected\": ...}) through a prompt on a backend, "
        "score the outputs with checks, and write report.json + report.md. Give two --backend or two --prompt "
        "values to compare variants. (`groklm eval` is the model harness on the synthetic tasks.)")
    evals.add_argument("data", help="JSONL file of cases")
    evals.add_argument("--backend", action="append", required=True, metavar="SPEC", help="backend (once, or twice to compare)")
    evals.add_argument("--prompt", action="append", default=None, metavar="TEMPLATE",
                       help="user prompt template, fields in braces (default {input}); twice to compare")
    evals.add_argument("--system", metavar="TEXT", help="system message for every case")
    evals.add_argument("--check", action="append", default=None, metavar="CHECK",
                       help="exact, contains, schema=FILE.json|MODULE:MODEL, python=MODULE:FUNCTION, judge "
                       "(repeatable; default exact)")
    evals.add_argument("--expected-field", default="expected", help="the case field exact/contains compare to")
    evals.add_argument("--judge", metavar="SPEC", help="backend of the LLM judge (default: the first --backend)")
    evals.add_argument("--rubric", default=None, help="what the judge checks (ends with: Answer pass or fail.)")
    evals.add_argument("--max-tokens", type=int, default=128, help="longest output (default 128)")
    evals.add_argument("--out", metavar="DIR", help="write DIR/report.json and DIR/report.md")
    evals.add_argument("--no-progress", action="store_true", help="no progress bar")
    evals.set_defaults(func=run_evals)

    register_traces(subparsers)
    register_distill(subparsers)


def import_object(spec: str):
    """MODULE:NAME -> the object, with a clear error."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"{spec!r} must be MODULE:NAME, e.g. mytools:get_weather")
    sys.path.insert(0, "")  # the current directory, as `python -m` does
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import {spec}: {error}") from None
    finally:
        sys.path.remove("")


# ---- agent ---------------------------------------------------------------------------------------


ACTIONS = ("email", "shell", "web_search", "fetch")  # groklm.apps.actions.ACTIONS (not imported: keep --help light)


def add_action_arguments(agent: argparse.ArgumentParser) -> None:
    """The tools that act (groklm.apps.actions): off unless enabled, each action confirmed unless --yes."""
    group = agent.add_argument_group(
        "tools that act", "Off unless named in --enable. Each email, shell run and fetch is shown and asked for "
        "on the terminal (refused without one) unless --yes; the allow-lists hold even with --yes.")
    group.add_argument("--enable", action="append", default=[], metavar="TOOL,...", help=f"enable tools: {', '.join(ACTIONS)}")
    group.add_argument("--yes", action="store_true", help="do every allowed action without asking")
    group.add_argument("--allow-recipient", action="append", default=[], metavar="ADDR",
                       help="email: an allowed recipient, a@b.c or @b.c for a domain (repeatable, or comma-separated)")
    group.add_argument("--smtp", metavar="HOST[:PORT]", help="email: the SMTP server (login from $GROKLM_SMTP_USER and "
                       "$GROKLM_SMTP_PASSWORD)")
    group.add_argument("--smtp-starttls", action="store_true", help="email: STARTTLS before sending")
    group.add_argument("--email-from", metavar="ADDR", help="email: the sender's address")
    group.add_argument("--allow-program", action="append", default=[], metavar="NAME",
                       help="shell: an allowed program (repeatable, or comma-separated)")
    group.add_argument("--workdir", default=".", metavar="DIR", help="shell: the directory programs run in (default .)")
    group.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                       help="fetch: an allowed host name (repeatable, or comma-separated)")
    group.add_argument("--search-index", metavar="INDEX", help="web_search: the RAG index it searches (default --rag)")
    group.add_argument("--action-timeout", type=float, default=10.0, metavar="S",
                       help="seconds an email, program or fetch may take (default 10)")


def split_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def action_policy(args: argparse.Namespace):
    """The ActionPolicy the flags describe; a setting for a tool that is not enabled is ignored."""
    from groklm.apps import actions

    enabled = split_list(args.enable)
    email = shell = fetch = search = None
    if "email" in enabled:
        if not args.smtp or not args.email_from:
            raise ConfigError("--enable email needs --smtp HOST[:PORT] and --email-from ADDR")
        host, _, port = args.smtp.partition(":")
        if not host or not (port or "25").isdigit():
            raise ConfigError(f"--smtp {args.smtp!r} must be HOST or HOST:PORT")
        email = actions.EmailSettings(host, args.email_from, split_list(args.allow_recipient), port=int(port or 25),
                                      starttls=args.smtp_starttls, timeout=args.action_timeout)
    if "shell" in enabled:
        shell = actions.ShellSettings(split_list(args.allow_program), args.workdir, timeout=args.action_timeout)
    if "fetch" in enabled:
        fetch = actions.FetchSettings(split_list(args.allow_host), timeout=args.action_timeout)
    if "web_search" in enabled and (args.search_index or args.rag):
        search = actions.index_search(args.search_index or args.rag)
    confirm = (lambda action: True) if args.yes else actions.ask_on_terminal
    return actions.ActionPolicy(enabled, email=email, shell=shell, fetch=fetch, search=search, confirm=confirm)


def run_agent(args: argparse.Namespace) -> None:
    from groklm.apps.agent import Agent
    from groklm.apps.backends import load_backend
    from groklm.apps.tools import calculator, search_tool

    tools = [] if args.no_calculator else [calculator]
    tools += [import_object(spec) for spec in args.tool]
    if args.rag:
        tools.append(search_tool(args.rag))
    tools += action_policy(args).tools()
    agent = Agent(load_backend(args.backend), tools, mode=args.mode, max_steps=args.max_steps, max_time=args.max_time,
                  system=args.system, max_tokens=args.max_tokens, temperature=args.temperature)
    print(f"agent ({agent.mode}) on {agent.backend.model}; tools: {', '.join(agent.tools) or '(none)'}", file=sys.stderr)
    result = agent.run(args.question, on_step=print_step)
    tokens = result.usage.total_tokens
    print(f"\n{'answer: ' + result.answer if result.answer is not None else 'no answer (stopped: ' + result.stopped + ')'}")
    print(f"({len(result.steps)} steps, {tokens} tokens; `groklm traces show {result.trace_id[:12]}`)", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(result), indent=2, default=str))


def print_step(step) -> None:
    head = f"step {step.number}"
    if step.thought:
        print(f"{head}  thought: {step.thought}", flush=True)
        head = " " * len(head)
    for call in step.calls:
        mark = "" if call["ok"] else "  (failed)"
        print(f"{head}  {call['name']}({call['arguments']}) -> {call['observation']}{mark}", flush=True)
        head = " " * len(head)
    if step.kind == "final":
        print(f"{head}  final answer: {step.answer}", flush=True)
    elif step.kind == "invalid":
        print(f"{head}  unusable reply {step.text[:80]!r}: {step.observation}", flush=True)


# ---- evals ---------------------------------------------------------------------------------------


def parse_check(spec: str, args: argparse.Namespace, judge_backend):
    from groklm.apps import evals
    from groklm.rundir import read_json

    kind, _, value = spec.partition("=")
    if kind in ("exact", "contains"):
        return getattr(evals, kind)(value or args.expected_field)
    if kind == "schema":
        if not value:
            raise ConfigError("--check schema=FILE.json or schema=MODULE:MODEL")
        if value.endswith(".json"):
            return evals.schema(read_json(value))
        return evals.schema(import_object(value))
    if kind == "python":
        return evals.python(import_object(value), name=value.partition(":")[2] if value else None)
    if kind == "judge":
        return evals.judge(judge_backend(), args.rubric or evals.JUDGE_RUBRIC)
    raise ConfigError(f"unknown check {spec!r}; checks are {', '.join(CHECKS)}")


def run_evals(args: argparse.Namespace) -> None:
    from groklm.apps.backends import load_backend
    from groklm.apps.evals import Prompt, compare, load_cases, to_markdown, write_report

    prompts = args.prompt or ["{input}"]
    if len(args.backend) > 2 or len(prompts) > 2:
        raise ConfigError("compare at most two variants: --backend twice, or --prompt twice")
    cases = load_cases(args.data)  # a bad data file is said before a model is loaded
    backends = [load_backend(spec) for spec in args.backend]
    pairs = [(b, p) for b in backends for p in prompts]  # 1x1, 2x1 or 1x2 (2x2 would be four variants)
    if len(pairs) > 2:
        raise ConfigError("two backends and two prompts make four variants; vary one thing at a time")
    options = {"max_tokens": args.max_tokens}
    targets = {}
    for number, (backend, prompt) in enumerate(pairs, start=1):
        name = f"{number}:{backend.model}" if len(backends) > 1 else f"{number}:prompt" if len(prompts) > 1 else backend.model
        targets[name] = Prompt(backend, prompt.replace("\\n", "\n"), args.system, options)
    def judge_backend():
        return load_backend(args.judge) if args.judge else backends[0]

    checks = [parse_check(spec, args, judge_backend) for spec in (args.check or ["exact"])]
    report = compare(cases, targets, checks, progress=not args.no_progress)
    if args.out:
        paths = write_report(report, args.out)
        print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    print(to_markdown(report).split("\n## Cases")[0].rstrip())


# ---- traces --------------------------------------------------------------------------------------


TRACE_FORMATS = ("sft", "kto", "dpo", "classify")  # groklm.apps.trace_export.FORMATS (not imported: keep --help light)
TRACE_FEEDBACK_FILTERS = ("any", "rated", "good", "bad", "corrected", "unrated")  # ... .FEEDBACK_FILTERS


def register_traces(subparsers) -> None:
    traces = subparsers.add_parser(
        "traces", help="list recorded traces, show one as a tree with its feedback, export them as training data",
        description="Traces live in $GROKLM_TRACES (default ~/.groklm/traces.sqlite); every backend call, tool call, "
        "extraction attempt, agent step and served chat completion is a span with OpenTelemetry GenAI attributes. "
        "With no subcommand: list the latest traces.")
    db_help = "the SQLite file (default $GROKLM_TRACES or ~/.groklm/traces.sqlite)"
    traces.add_argument("--last", type=int, default=20, metavar="N", help="how many recent traces to list (default 20)")
    traces.add_argument("--show", metavar="ID", help="the same as `traces show ID`")
    traces.add_argument("--db", metavar="PATH", help=db_help)
    traces.add_argument("--json", action="store_true", help="with --show: every span and attribute as JSON")
    traces.set_defaults(func=run_traces)
    commands = traces.add_subparsers(dest="traces_command", metavar="{show,export,usage}")
    show = commands.add_parser("show", help="print one trace as a tree, with its feedback",
                               description="Print one trace (a prefix of its id, or of a span's id) as a tree of "
                               "spans, then the feedback given on it.")
    show.add_argument("id", metavar="ID", help="trace id (a prefix is enough)")
    # SUPPRESS: given before or after the subcommand, these reach the same attribute (a subcommand's
    # own default would overwrite what `traces --db PATH show` set).
    show.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="every span and attribute as JSON (the root's with its feedback)")
    show.set_defaults(func=run_traces_show)
    export = commands.add_parser(
        "export", help="write rated completions, corrections or classifications as training JSONL",
        description="sft: good answers and corrections as conversations (groklm sft --data); kto: every rated "
        "reply and correction with a true/false label; dpo: a correction (chosen) against the reply it corrects "
        "(rejected) (groklm dpo --data); classify: the apps' classify() calls as distillation labels "
        "(groklm distill --data). Identical records are written once; an empty selection writes nothing and says so.")
    export.add_argument("--format", required=True, choices=TRACE_FORMATS, help="what to write")
    export.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write (atomically)")
    export.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    add_selection_arguments(export)
    export.add_argument("--redact", action="append", default=[], metavar="PATTERN",
                        help="replace matches with [REDACTED] in every exported text: a preset (email, phone, ipv4) "
                        "or a regex (repeatable)")
    export.set_defaults(func=run_traces_export)
    usage = commands.add_parser(
        "usage", help="calls, tokens, seconds and cost per model",
        description="Add up the model calls of the selected traces per model: calls, input and output tokens, "
        "seconds, and with --price the cost. A call is a span with token usage and none below it.")
    usage.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    add_selection_arguments(usage)
    usage.add_argument("--price", action="append", default=[], metavar="MODEL=IN/OUT",
                       help="a model's price per million input/output tokens, e.g. gpt-4o-mini=0.15/0.6 (repeatable)")
    usage.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per model")
    usage.set_defaults(func=run_traces_usage)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Which traces `export` and `usage` read (groklm.apps.trace_export.Selection)."""
    parser.add_argument("--since", metavar="TIME", help="traces started at or after this ISO date/time (local)")
    parser.add_argument("--until", metavar="TIME", help="traces started before this ISO date/time (local)")
    parser.add_argument("--app", metavar="NAME", help="traces of this app: 'serve', or a root span's name or first word "
                        "(extract, classify, invoke_agent)")
    parser.add_argument("--tool", metavar="NAME", help="traces that called this tool")
    parser.add_argument("--feedback", choices=TRACE_FEEDBACK_FILTERS, default="any",
                        help="traces whose latest feedback is this (default any)")


def open_traces(db: str | None):
    from groklm.apps.tracing import Tracer, get_tracer

    tracer = Tracer(db) if db else get_tracer()
    if tracer.path is None:
        raise ConfigError("tracing is off ($GROKLM_TRACES=off); pass --db PATH to read a trace file")
    return tracer


def run_traces(args: argparse.Namespace) -> None:
    from groklm.apps.tracing import format_list

    if args.show:
        args.id = args.show
        return run_traces_show(args)
    if args.last < 1:
        raise ConfigError(f"--last must be >= 1, got {args.last}")
    tracer = open_traces(args.db)
    roots = tracer.roots(args.last)
    print(f"traces in {tracer.path}", file=sys.stderr)
    print(format_list(roots))


def run_traces_show(args: argparse.Namespace) -> None:
    from groklm.apps.trace_usage import format_usage, usage_by_model
    from groklm.apps.tracing import format_tree, span_dict

    tracer = open_traces(args.db)
    spans = tracer.trace(args.id)
    verdicts = tracer.feedback(spans[0].trace_id)
    if args.json:  # feedback is on the whole trace: its root carries it
        shown = [{**span_dict(s), **({"feedback": [asdict(v) for v in verdicts]} if s.parent_id is None else {})}
                 for s in spans]
        print(json.dumps(shown, indent=2, default=str))
    else:
        print(format_tree(spans, feedback=verdicts))
        print(format_usage(usage_by_model([spans])))


def selection_of(args: argparse.Namespace):
    from groklm.apps.trace_export import Selection, parse_time

    return Selection(since=parse_time(args.since) if args.since else None,
                     until=parse_time(args.until) if args.until else None,
                     app=args.app, tool=args.tool, feedback=args.feedback)


def run_traces_usage(args: argparse.Namespace) -> None:
    from groklm.apps.trace_export import selected_traces
    from groklm.apps.trace_usage import format_usage, parse_prices, usage_by_model

    prices = parse_prices(args.price)
    selection = selection_of(args)
    tracer = open_traces(args.db)
    rows = usage_by_model((trace for trace, _ in selected_traces(tracer, selection)), prices)
    if getattr(args, "json", False):
        for row in rows:
            print(json.dumps({**asdict(row), "seconds_per_call": row.seconds_per_call, "cost_per_call": row.cost_per_call}))
        return
    print(f"model calls in {tracer.path} ({selection.describe()})", file=sys.stderr)
    print(format_usage(rows))


def run_traces_export(args: argparse.Namespace) -> None:
    from groklm.apps.trace_export import export_traces

    selection = selection_of(args)
    tracer = open_traces(args.db)
    count = export_traces(tracer, args.format, args.out, selection, args.redact)
    print(f"wrote {count} {args.format} records to {args.out} (from {tracer.path}; {selection.describe()})")


# ---- distill -------------------------------------------------------------------------------------


def register_distill(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill", help="label texts with a big model, train a small encoder classifier on its labels",
        description="Distillation: TEACHER (local:RUN, hf:DIR or openai:URL#MODEL) labels every text of --data with "
        "classify(); a small encoder classifier (MiniLM, or a random encoder with --student scratch) is fine-tuned "
        "on those labels; agreement with the teacher on held-out texts and items/s of both go to OUT/report.md. "
        "Load the student with groklm.apps.distill.Student.load(OUT).predict(texts).")
    parser.add_argument("--teacher", required=True, metavar="SPEC", help="local:RUN_DIR, hf:CHECKPOINT_DIR or openai:BASE_URL#MODEL")
    parser.add_argument("--data", required=True, metavar="FILE", help='texts: {"text": ...} per line (.jsonl) or one text per line')
    parser.add_argument("--labels", required=True, metavar="A,B,...", help='the labels, comma-separated, e.g. "spam,not spam"')
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    parser.add_argument("--student", choices=DISTILL_STUDENTS, default="minilm",
                        help="start from all-MiniLM-L6-v2 (default) or random weights")
    parser.add_argument("--held-out", type=float, default=0.2, metavar="FRACTION", help="share of texts held out for the comparison (0.2)")
    parser.add_argument("--epochs", type=float, default=3, help="passes over the training texts (3)")
    parser.add_argument("--labels-cache", metavar="FILE",
                        help=f"the teacher's answers, reused and extended (default OUT/{DISTILL_LABELS_FILE})")
    parser.add_argument("--instructions", metavar="TEXT",
                        help='the question put before each text (default "Classify this text as A or B.")')
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text; longer texts are cut (128)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a training setting (lr=3e-4, batch_size=32) or, with --student scratch, a model one (n_layer=1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> None:
    from groklm.apps.distill import distill

    report = distill(args.teacher, args.data, args.labels, args.out, student=args.student, held_out=args.held_out,
                     epochs=args.epochs, labels_cache=args.labels_cache, instructions=args.instructions,
                     max_length=args.max_length, overrides=parse_set_args(args.overrides), progress=not args.no_progress)
    print(f"{args.out}: agreement with the teacher {report['agreement']:.3f} on {report['held_out']} held-out texts "
          f"(most common label alone: {report['majority_baseline']:.3f}); student {report['student_items_per_s']:.1f} "
          f"items/s batched, {report['student_items_per_s_one_by_one']:.1f} one by one, vs teacher "
          f"{report['teacher_items_per_s']:.1f} ({report['speedup']:.1f}x, {report['speedup_one_by_one']:.1f}x)")
