"""The best time grid for a sampler on a Gaussian target, from its exact law as a differentiable function of the grid.

- :class:`GridObjective` — the exact W2 to the data or to the marginal where the grid stops (or the exact strong
  error) of a method's output as a float64 function of its grid times, differentiable by autograd (``objective.py``);
- :class:`MonotoneGrid` — strictly increasing grids, parameterised by the logits of their increments and, with a free
  start, where they start (``parameterisation.py``);
- :func:`optimal_grid` — the grid that minimises the objective, by L-BFGS-B on those logits, with its convergence
  recorded and cached (``optimise.py``); ``get_grid("optimal", steps, schedule, method=..., target=...)`` is the
  same grid by name.
"""

from .objective import METRICS, GridObjective
from .optimise import OptimalGrid, optimal_grid
from .parameterisation import MonotoneGrid

__all__ = ["GridObjective", "METRICS", "MonotoneGrid", "OptimalGrid", "optimal_grid"]
