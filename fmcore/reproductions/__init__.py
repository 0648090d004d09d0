"""Samplers reproduced as their sources wrote them — constants, quirks and all — so that the suite can measure them
against the exact truth. Each registers its method by name on import (``fmcore`` imports them all).

* :mod:`fmcore.reproductions.seed000` — seed 000's reverse-SDE sampler, ``seed000_sde``.
* :mod:`fmcore.reproductions.pierret_galerne` — Pierret & Galerne's exponential integrator and DDPM step of the
  reverse VP SDE, ``pg_ei`` and ``pg_ddpm``.
"""

from . import pierret_galerne, seed000

__all__ = ["pierret_galerne", "seed000"]
