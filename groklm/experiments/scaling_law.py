"""The parametric scaling law L(N, D) = E + A / N^alpha + B / D^beta, fitted by least squares, and
the compute-optimal model size it implies.

N: non-embedding parameters, D: training tokens, L: held-out loss (nats / token). E is the loss
no model reaches (the entropy of the text), A / N^alpha what a finite model costs, B / D^beta
what finite data costs (Hoffmann et al., 2022, "approach 3").

The fit minimises the mean squared error of log L, so that a point at loss 4 and one at loss 1.5
weigh the same relatively, over log E, log A, log B, alpha and beta (E, A, B positive by
construction). Five parameters from a dozen noisy points is a non-convex problem with flat
valleys, so it starts from a grid of initialisations: every grid point's error is evaluated at
once (cheap, one tensor), and L-BFGS refines the best few; the lowest end point wins.
"""

from __future__ import annotations

import itertools
import math

import torch

# The start grid: log E around the lowest loss seen, log A and log B across the scales small
# models meet, the exponents over the range reported for language models (0.05-1).
LOG_E_OFFSETS = (-1.0, -0.5, -0.2)  # log E = log(min loss) + offset
LOG_AB = (0.0, 2.5, 5.0, 7.5, 10.0, 15.0)
EXPONENTS = (0.1, 0.3, 0.6, 1.0)
REFINED = 5  # starts refined with L-BFGS


def predict(law: dict, n, d):
    """L(N, D) for numbers or numpy arrays."""
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def fit_law(n: list[float], d: list[float], loss: list[float]) -> dict:
    """The law fitted to the points (n[i], d[i], loss[i]): {"E", "A", "alpha", "B", "beta",
    "rmse_log" (root mean squared error of log L), "rmse" (of L), "residuals" (measured - fitted, per point)}.
    With five points or fewer many laws fit them exactly: the one found is the nearest to the best start."""
    log_n, log_d, log_l = (torch.tensor(values, dtype=torch.float64).log() for values in (n, d, loss))

    def error(theta: torch.Tensor) -> torch.Tensor:
        """Mean squared log error of each row of theta = (log E, log A, log B, alpha, beta)."""
        terms = torch.stack([theta[:, :1].expand(-1, len(log_l)), theta[:, 1:2] - theta[:, 3:4] * log_n,
                             theta[:, 2:3] - theta[:, 4:5] * log_d])
        return ((torch.logsumexp(terms, dim=0) - log_l) ** 2).mean(dim=1)

    floor = float(log_l.min())
    starts = torch.tensor([(floor + e, a, b, alpha, beta) for e, a, b, alpha, beta in
                           itertools.product(LOG_E_OFFSETS, LOG_AB, LOG_AB, EXPONENTS, EXPONENTS)], dtype=torch.float64)
    ends = [refine(error, start) for start in starts[error(starts).argsort()[:REFINED]]]
    best = min((end for end in ends if math.isfinite(end[0])), key=lambda end: end[0])
    log_e, log_a, log_b, alpha, beta = best[1]
    law = {"E": math.exp(log_e), "A": math.exp(log_a), "alpha": alpha, "B": math.exp(log_b), "beta": beta}
    fitted = [predict(law, ni, di) for ni, di in zip(n, d)]
    law["rmse_log"] = math.sqrt(best[0])
    law["rmse"] = math.sqrt(sum((li - fi) ** 2 for li, fi in zip(loss, fitted)) / len(loss))
    law["residuals"] = [li - fi for li, fi in zip(loss, fitted)]
    return law


def refine(error, start: torch.Tensor) -> tuple[float, list[float]]:
    """L-BFGS from `start`: (the error reached, the parameters there)."""
    theta = start.clone().unsqueeze(0).requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = error(theta).sum()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        return float(error(theta)), theta.detach()[0].tolist()


def compute_optimal(law: dict, compute: float) -> dict:
    """The N that minimises L(N, D) with D = compute / (6 N), and that D and loss.

    Setting dL/dN = 0 along the constraint: alpha A / N^alpha = beta B / D^beta, which gives
    N_opt = G (C/6)^(beta / (alpha + beta)), G = (alpha A / (beta B))^(1 / (alpha + beta))."""
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    n = g * (compute / 6) ** (b / (a + b))
    d = compute / (6 * n)
    return {"compute": compute, "N": n, "D": d, "loss": predict(law, n, d)}
