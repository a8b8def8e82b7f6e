"""What the model calls cost: tokens, seconds and money per model, read back from the traces.

An application that uses two models (a writer and a judge, a big model and the small one that
replaces it) needs to know what each costs per call before it can decide which to keep. Every
backend call is already a span with its model and token usage (OpenTelemetry's
gen_ai.request.model, gen_ai.usage.input_tokens / output_tokens) and its duration; this adds
them up per model:

    model                  calls   input tok  output tok   seconds  s/call     cost  cost/call
    runs/smol                 40      12,480         560      41.2    1.03        -          -
    gpt-4o-mini               40       9,210       1,880      22.9    0.57  0.00251    6.3e-05

A call is a span that carries token usage and has no descendant that does: an agent's root adds
up its steps' usage, and counting both would count every token twice. Money needs a price,
which a trace cannot know: `--price MODEL=IN/OUT` gives one in currency per million input and
output tokens (a hosted API's price list); a local model's cost is its seconds.

    groklm traces usage --since 2026-12-01 --price gpt-4o-mini=0.15/0.6
    groklm traces show ID        # ends with the same table for that one trace
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from groklm.apps.tracing import Span
from groklm.errors import ConfigError

INPUT_TOKENS, OUTPUT_TOKENS, MODEL = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.request.model"
PER_TOKENS = 1_000_000  # prices are per million tokens, as the API price lists give them


@dataclass(frozen=True)
class Price:
    """Currency per million input tokens and per million output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / PER_TOKENS


@dataclass
class ModelUsage:
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    cost: float | None = None  # None: no price given for this model

    @property
    def seconds_per_call(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0

    @property
    def cost_per_call(self) -> float | None:
        return None if self.cost is None or not self.calls else self.cost / self.calls


def parse_prices(specs: Iterable[str]) -> dict[str, Price]:
    """["gpt-4o-mini=0.15/0.6", ...] -> {"gpt-4o-mini": Price(0.15, 0.6)}; one number prices both sides."""
    prices = {}
    for spec in specs:
        model, sep, numbers = spec.rpartition("=")
        parts = numbers.split("/")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if not sep or not model or len(values) not in (1, 2) or any(v < 0 for v in values):
            raise ConfigError(f"--price takes MODEL=IN/OUT (currency per million input/output tokens, "
                              f"e.g. gpt-4o-mini=0.15/0.6), got {spec!r}")
        prices[model] = Price(values[0], values[-1])
    return prices


def calls(spans: list[Span]) -> list[Span]:
    """The spans of one trace that are model calls: usage on them and on none of their descendants."""
    with_usage = [s for s in spans if INPUT_TOKENS in s.attributes or OUTPUT_TOKENS in s.attributes]
    parents = {s.span_id: s.parent_id for s in spans}
    counted_below: set[str] = set()
    for s in with_usage:  # mark every ancestor of a span with usage
        parent = s.parent_id
        while parent is not None and parent not in counted_below:
            counted_below.add(parent)
            parent = parents.get(parent)
    return [s for s in with_usage if s.span_id not in counted_below]


def usage_by_model(traces: Iterable[list[Span]], prices: dict[str, Price] | None = None) -> list[ModelUsage]:
    """Calls, tokens, seconds and (priced models only) cost per model over `traces`, most calls first."""
    prices = prices or {}
    table: dict[str, ModelUsage] = {}
    for trace in traces:
        for s in calls(trace):
            model = str(s.attributes.get(MODEL) or "(unknown model)")
            row = table.setdefault(model, ModelUsage(model))
            row.calls += 1
            row.input_tokens += int(s.attributes.get(INPUT_TOKENS) or 0)
            row.output_tokens += int(s.attributes.get(OUTPUT_TOKENS) or 0)
            row.seconds += s.duration_s
    for row in table.values():
        if row.model in prices:
            row.cost = prices[row.model].cost(row.input_tokens, row.output_tokens)
    return sorted(table.values(), key=lambda r: (-r.calls, r.model))


def format_usage(rows: list[ModelUsage]) -> str:
    if not rows:
        return "no model calls with token usage in the selection"
    lines = [f"{'model':<32} {'calls':>6} {'input tok':>11} {'output tok':>11} {'seconds':>9} {'s/call':>7} "
             f"{'cost':>9} {'cost/call':>10}"]
    for r in rows:
        cost = "-" if r.cost is None else f"{r.cost:.4g}"
        per_call = "-" if r.cost_per_call is None else f"{r.cost_per_call:.3g}"
        lines.append(f"{r.model[:32]:<32} {r.calls:>6} {r.input_tokens:>11,} {r.output_tokens:>11,} {r.seconds:>9.2f} "
                     f"{r.seconds_per_call:>7.3f} {cost:>9} {per_call:>10}")
    return "\n".join(lines)
