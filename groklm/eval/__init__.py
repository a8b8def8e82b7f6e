"""Evals: how well a run does on tasks a program can grade (see harness.py)."""

from groklm.eval.harness import evaluate_model, evaluate_run

__all__ = ["evaluate_model", "evaluate_run"]
