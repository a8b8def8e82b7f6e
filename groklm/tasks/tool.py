"""tool: the user asks a sum; the assistant calls the calculator, a tool turn answers, and the
assistant repeats the result:

    system     You can use a calculator.
    user       What is 17 times 3?
    assistant  CALL calculator({"expression": "17*3"})
    tool       51
    assistant  51

The call is written and read by groklm.infer.tool_calls, the protocol the server and the apps
parse, so a model trained here makes calls that `groklm serve` returns as OpenAI tool_calls
and that the apps' calculator tool (whose argument is also "expression") can run. The system
prompt is one short sentence, not tools_prompt()'s JSON schema, which alone would take more
tokens than the rest of the conversation (and push it past a tiny model's 128-token context):
a 1-5M parameter model learns the call from the demonstrations, not from a schema. What the
system prompt does teach is when to call: the same "What is 4 plus 5?" is answered directly in
the multiturn task, where no calculator was offered.

The calculator is groklm.calculator on integers with + - * and brackets (a tree walk, never
`eval`). Both replies are graded: the call (1.0 a well-formed call whose expression has the
right value, 0.25 a well-formed call with the wrong value, else 0, answering directly
included) and the final answer (number rules).
"""

from __future__ import annotations

import json
import random

from groklm.calculator import INTEGER_RING, evaluate
from groklm.infer.tool_calls import ToolSpec, format_call, parse_call
from groklm.tasks.base import Forms, GradedReply, Problem, Task, msg, near_numbers, number_reward

ARGUMENT = "expression"
CALCULATOR = ToolSpec(
    "calculator", "Integer arithmetic: + - * and brackets.",
    {"type": "object", "properties": {ARGUMENT: {"type": "string"}}, "required": [ARGUMENT]},
)
SYSTEM = "You can use a calculator."
QUESTIONS = Forms(
    seen=("What is {a} {word} {b}?", "Compute {a}{op}{b}.", "How much is {a} {word} {b}?", "Calculate {a} {word} {b}."),
    held_out=("I need {a}{op}{b}, please.",),
)


def calculator_call(expr: str) -> str:
    """The assistant's call line: CALL calculator({"expression": "17*3"})."""
    return format_call(CALCULATOR.name, {ARGUMENT: expr})


def call_expression(reply: str) -> str | None:
    """The expression of a reply that is exactly one calculator call (as the server parses it),
    else None: text around the call, another tool or other arguments are not this task's call."""
    call = parse_call(reply, [CALCULATOR])
    if call is None:
        return None
    arguments = json.loads(call.arguments)
    expr = arguments.get(ARGUMENT)
    return expr if set(arguments) == {ARGUMENT} and isinstance(expr, str) else None


def calculate(expr: str) -> str:
    """What the tool turn says: the integer value of `expr`, or "error"."""
    try:
        return str(evaluate(expr, INTEGER_RING, floats=False))
    except ValueError:
        return "error"


def tool_result(reply: str) -> str | None:
    """What the tool turn says after `reply`, or None if `reply` is not a call (an RL loop's step)."""
    expr = call_expression(reply)
    return None if expr is None else calculate(expr)


def generate(rng: random.Random, held_out: bool) -> Problem:
    op = rng.choice("+-*")
    a, b = rng.randint(10, 99), rng.randint(2 if op == "*" else 10, 9 if op == "*" else 99)
    if op == "-" and b > a:
        a, b = b, a
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    user = QUESTIONS.pick(rng, held_out, a=a, b=b, op=op, word=word)
    expr = f"{a}{op}{b}"
    call, result = calculator_call(expr), calculate(expr)
    value, wrong_expr = int(result), f"{a}{'-' if op == '+' else '+'}{b}"  # the wrong operation: never equal here
    ask = [msg("system", SYSTEM), msg("user", user)]
    after_call = [*ask, msg("assistant", call), msg("tool", result)]
    malformed_calls = [result, f"calculator({expr})", format_call("calc", {ARGUMENT: expr})]
    call_reply = GradedReply(ask, call, [calculator_call(wrong_expr)], malformed_calls)
    answer_reply = GradedReply(after_call, result, near_numbers(value), [f"The answer is {result}.", call])
    return Problem(expr, [*after_call, msg("assistant", result)], [call_reply, answer_reply], f"The answer is {result}.")


def tool_reward(expected: str, completion: str) -> float:
    """A call when a call is expected (see the module docstring), number rules for the final answer."""
    want = call_expression(expected)
    if want is None:  # the final-answer reply
        return number_reward(expected, completion)
    got = call_expression(completion)
    if got is None:
        return 0.0
    return 1.0 if calculate(got) == calculate(want) else 0.25


TASK = Task("tool", generate, tool_reward, (QUESTIONS,))
