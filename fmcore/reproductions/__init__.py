"""Samplers reproduced as their sources wrote them — constants, quirks and all — so that the suite can measure them
against the exact truth. Each registers its method by name on import (``fmcore`` imports them all).

* :mod:`fmcore.reproductions.seed000` — seed 000's reverse-SDE sampler, ``seed000_sde``.
"""

from . import seed000

__all__ = ["seed000"]
