"""Arithmetic without `eval`: parse the expression and walk its syntax tree.

`eval("2+2")` would also run `__import__('os').system(...)`; a tree walk that knows only
numbers and a chosen set of operators can compute nothing else. Shared by the synthetic tool
task (integers, + - * only) and the apps' calculator tool (the full set below).
"""

from __future__ import annotations

import ast
import operator

MAX_EXPONENT = 64  # 2**64 is fine; 9**9**9 would hang the process computing a huge integer
MAX_DIGITS = 100  # refuse to build numbers longer than this (e.g. 10**64 * 10**64 * ...)


def _power(base, exponent):
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
    return operator.pow(base, exponent)


INTEGER_RING = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
ARITHMETIC = {
    **INTEGER_RING,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def evaluate(expr: str, operators: dict = ARITHMETIC, floats: bool = True) -> int | float:
    """The value of `expr`; ValueError saying what is not allowed (or division by zero)."""
    number_types = (int, float) if floats else (int,)

    def walk(node) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in number_types:  # not bool, not str
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            value = operators[type(node.op)](walk(node.left), walk(node.right))
            if isinstance(value, int) and len(str(abs(value))) > MAX_DIGITS:
                raise ValueError(f"result has more than {MAX_DIGITS} digits")
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        allowed = " ".join(SYMBOLS[op] for op in operators)
        raise ValueError(f"unsupported expression {ast.unparse(node)!r}: use numbers, brackets and {allowed}")

    try:
        return walk(ast.parse(expr.strip(), mode="eval").body)
    except SyntaxError as error:
        raise ValueError(f"cannot parse {expr!r}: {error.msg}") from None
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except (RecursionError, OverflowError) as error:
        raise ValueError(f"cannot compute {expr!r}: {error}") from None


def format_number(value: float) -> str:
    """Integers as they are; floats with up to 15 significant digits (0.1+0.2 -> "0.3")."""
    if isinstance(value, float):
        return format(value, ".15g")
    return str(value)
