r"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"): a
stochastic Adams predictor–corrector for the SDE with stochasticity τ, on the data prediction, in λ = log(α/σ).

A step s → t of :math:`h = \lambda_t - \lambda_s` (:math:`\rho = e^{-h}`, :math:`\kappa = 1 + \tau^2`) integrates the
data prediction's Lagrange polynomial through nodes :math:`\lambda_j` exactly against the SDE's exponential weight:

.. math::
    x_t = \frac{\sigma_t}{\sigma_s}\rho^{\tau^2}x_s + \alpha_t\sum_j c_j D_j + \sigma_t\sqrt{1 - \rho^{2\tau^2}}\,\xi,
    \qquad c_j = \kappa\int_{\lambda_s}^{\lambda_t} e^{-\kappa(\lambda_t - \lambda)}\ell_j(\lambda)\,d\lambda .

The predictor (SA-Predictor, Adams–Bashforth) takes the last ``predictor_order`` data predictions as nodes; the
corrector (SA-Corrector, Adams–Moulton) redoes the step from the same start with the same ξ once the prediction at
its end is known, through that one and the last ``corrector_order`` − 1 before it. As in UniPC, the prediction at
the predicted end both corrects that step and starts the next: one NFE per step, and the last step is not corrected.
With one node it is ``dpmpp_2m_sde``'s first-order step with η = τ²; τ = 0 is the probability-flow ODE. A step whose
λ is infinite at either end (from α = 0, to σ = 0) is that first-order step.

Through two nodes (the default orders), diffusers' ``SASolverScheduler`` (and the SA-Solver code it was ported from)
adds a term it calls "similar to UniPC", O(h³) per step, so the order stays 2 (``unipc_term = 1``, the default; 0 leaves it out):

.. math::
    \kappa\,\alpha_t\,B\,\frac{D_0 - D_1}{\lambda_0 - \lambda_1}, \qquad
    B = \frac{h^2}{2} - \frac{\kappa h - 1 + e^{-\kappa h}}{\kappa^2} = \frac{\kappa h^3}{6} + O(h^4),

with D₀ the newest node. diffusers' τ is 1 only on its timesteps 200 … 800 (0 elsewhere); with τ = 0 there it is
this sampler on its own grid (``tests/test_peers.py``).
"""

from __future__ import annotations

import math

from torch import Tensor

from .diffusion_samplers import _checked, _lagrange_basis, _step_in_log_snr, _trajectory, _values
from .laws import PROBED
from .methods import Method, register_method
from .sde import brownian_increment


def exponential_lagrange_weights(nodes: list[float], start: float, end: float, rate: float) -> list[float]:
    r""":math:`c_j = \int_{start}^{end} e^{r u}\ell_j(u)\,du` for the Lagrange basis on ``nodes``, exactly: for a
    polynomial p, :math:`\int e^{ru}p\,du = e^{ru}\sum_k (-1)^k p^{(k)}/r^{k+1}`."""
    weights = []
    for basis in _lagrange_basis(nodes):
        series = sum((((-1) ** k) / rate ** (k + 1)) * basis.deriv(k) for k in range(1, len(nodes))) + basis / rate
        weights.append(math.exp(rate * end) * float(series(end)) - math.exp(rate * start) * float(series(start)))
    return weights


def _sa_update(x: Tensor, s: float, t: float, schedule, nodes: list[tuple[Tensor, float]], tau: float,
               noise: Tensor | None, unipc_term: bool) -> Tensor:
    """One SA step s → t (module docstring) through ``nodes`` = (data prediction, its λ), newest first; the nodes
    with an infinite λ, and all but the newest where h is infinite, are dropped."""
    alpha_s, sigma_s, alpha_t, sigma_t, rho, h = _step_in_log_snr(schedule, s, t)
    kappa = 1.0 + tau * tau
    decay = rho ** (tau * tau) if tau > 0.0 else 1.0
    update = (sigma_t / sigma_s) * decay * x if sigma_s > 0.0 else 0.0 * x
    usable = [node for node in nodes if math.isfinite(node[1])] if math.isfinite(h) else []
    if len(usable) < 2:
        update = update + alpha_t * (1.0 - rho**kappa) * nodes[0][0]
    else:
        lambda_t = _lambda(alpha_s, sigma_s) + h
        weights = exponential_lagrange_weights([node[1] - lambda_t for node in usable], -h, 0.0, kappa)
        update = update + alpha_t * kappa * sum(w * data for w, (data, _) in zip(weights, usable, strict=True))
        if unipc_term and len(usable) == 2:
            (newest, lambda_0), (older, lambda_1) = usable
            bend = h * h / 2.0 - (kappa * h - 1.0 + math.exp(-kappa * h)) / kappa**2
            update = update + alpha_t * kappa * bend * (newest - older) / (lambda_0 - lambda_1)
    if noise is not None and sigma_t > 0.0:
        update = update + sigma_t * math.sqrt(max(0.0, 1.0 - rho ** (2.0 * tau * tau))) * noise
    return update


def _lambda(alpha: float, sigma: float) -> float:
    """λ = log(α/σ), ±∞ at the ends."""
    if alpha == 0.0:
        return -math.inf
    if sigma == 0.0:
        return math.inf
    return math.log(alpha / sigma)


def integrate_sa_solver(request) -> tuple[Tensor, Tensor | None, dict]:
    """The predictor–corrector of the module docstring on ``request.grid``."""
    options = request.options
    tau, orders = options["tau"], (options["predictor_order"], options["corrector_order"])
    if any(order != int(order) or not 1 <= order <= 4 for order in orders):
        raise ValueError(f"sa_solver: predictor_order and corrector_order must be 1, 2, 3 or 4, got {orders}")
    if options["unipc_term"] not in (0.0, 1.0):
        raise ValueError(f"sa_solver: unipc_term must be 0 or 1, got {options['unipc_term']}")
    unipc_term = options["unipc_term"] == 1.0
    predictor_order, corrector_order = (int(order) for order in orders)
    schedule, times = request.schedule, request.grid.tolist()
    x, points = request.x0, ([request.x0] if request.return_trajectory else None)
    history: list[tuple[Tensor, float]] = []  # (data prediction, λ), newest first
    start_state, noise = x, None
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        data = request.field.data_prediction(s, x)
        node = (data, _lambda(*_values(schedule, s)))
        if step > 0:  # SA-Corrector: redo step − 1 through its end's prediction
            x = _checked(_sa_update(start_state, times[step - 1], s, schedule, [node, *history][:corrector_order], tau,
                                    noise, unipc_term), "sa_solver", step - 1, times[step - 1], s)
            if points is not None:
                points[-1] = x
        history = [node, *history][:max(predictor_order, corrector_order - 1)]
        noise = brownian_increment(x.shape, request.generator, x) if tau > 0.0 else None
        start_state = x
        x = _checked(_sa_update(x, s, t, schedule, history[:predictor_order], tau, noise, unipc_term),
                     "sa_solver", step, s, t)
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


register_method(Method(
    "sa_solver", integrate_sa_solver,
    options={"tau": 1.0, "predictor_order": 2.0, "corrector_order": 2.0, "unipc_term": 1.0},
    random="tau", order=2, stages=1, family="diffusion", predictions=("data",), needs_schedule=True, exact_law=PROBED,
))
