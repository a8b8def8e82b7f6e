"""Arithmetic without `eval`: parse the expression and walk its syntax tree.

`eval("2+2")` would also run `__import__('os').system(...)`; a tree walk that knows only
numbers and a chosen set of operators can compute nothing else. Shared by the synthetic tool
task (integers, + - * only) and the apps' calculator tool (the full set below).

The expression comes from a model, so everything that could cost memory or time is bounded
before it is spent: the expression's length (Python's parser needs memory in proportion to
the nesting, and `-` repeated a million times exhausts it), the depth of the tree, exponents
(9**9**9 would compute a number of 370 million digits) and the magnitude of every
intermediate result. Results are real numbers only: `(-1)**0.5` is a complex number in
Python, which is not an answer a calculator should give. Each limit is a keyword of
`evaluate` for callers that need more.
"""

from __future__ import annotations

import ast
import math
import operator

from groklm.errors import DataError

MAX_EXPRESSION_CHARS = 1000  # longer than any arithmetic a person or a model writes by hand
MAX_DEPTH = 100  # nested operators and brackets; the parser itself refuses 200 nested brackets
MAX_EXPONENT = 64  # 2**64 is fine; 9**9**9 would hang the process computing a huge integer
MAX_DIGITS = 100  # no result (or intermediate result) of 10**100 or more in magnitude


INTEGER_RING = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
ARITHMETIC = {
    **INTEGER_RING,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


class CalculatorError(DataError, ValueError):
    """An expression the calculator refuses, or cannot compute. A ValueError too, so callers
    that only care that the expression failed (the tool task's verifier) catch it as one."""


def evaluate(expr: str, operators: dict = ARITHMETIC, floats: bool = True, *, max_chars: int = MAX_EXPRESSION_CHARS,
             max_depth: int = MAX_DEPTH, max_exponent: int = MAX_EXPONENT, max_digits: int = MAX_DIGITS) -> int | float:
    """The value of `expr`; CalculatorError saying what is not allowed (or division by zero)."""
    number_types = (int, float) if floats else (int,)
    limit = 10**max_digits  # an int: compared exactly with ints and floats alike

    def checked(value) -> int | float:
        if isinstance(value, complex):
            raise CalculatorError("the result is not a real number (e.g. a fractional power of a negative number)")
        if isinstance(value, float) and not math.isfinite(value):
            raise CalculatorError(f"the result is out of range (at most {max_digits} digits)")
        if abs(value) >= limit:
            raise CalculatorError(f"the result has more than {max_digits} digits")
        return value

    def walk(node, depth: int) -> int | float:
        if depth > max_depth:
            raise CalculatorError(f"the expression is nested more than {max_depth} levels deep")
        if isinstance(node, ast.Constant) and type(node.value) in number_types:  # not bool, not str
            return checked(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            left, right = walk(node.left, depth + 1), walk(node.right, depth + 1)
            if isinstance(node.op, ast.Pow) and abs(right) > max_exponent:
                raise CalculatorError(f"exponent {format_number(right)} is too large (at most {max_exponent})")
            return checked(operators[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand, depth + 1)
            return -value if isinstance(node.op, ast.USub) else value
        allowed = " ".join(SYMBOLS[op] for op in operators)
        raise CalculatorError(f"unsupported expression {ast.unparse(node)!r}: use numbers, brackets and {allowed}")

    if len(expr) > max_chars:
        raise CalculatorError(f"the expression is {len(expr)} characters long, more than the {max_chars} allowed")
    try:
        return walk(ast.parse(expr.strip(), mode="eval").body, 0)
    except SyntaxError as error:
        raise CalculatorError(f"cannot parse {expr!r}: {error.msg}") from None
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:  # a float power beyond 1e308, before its magnitude could be checked
        raise CalculatorError(f"the result is out of range (at most {max_digits} digits)") from None
    except (RecursionError, MemoryError) as error:  # bounded by the limits above; a last guard
        raise CalculatorError(f"cannot compute {expr[:100]!r}: {type(error).__name__}") from None


def format_number(value: float) -> str:
    """Integers as they are; floats with up to 15 significant digits (0.1+0.2 -> "0.3")."""
    if isinstance(value, float):
        return format(value, ".15g")
    return str(value)
