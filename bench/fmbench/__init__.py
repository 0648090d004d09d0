"""fmbench: the harness around :mod:`fmcore` — sweeps of cells, a store that saves each row as it finishes,
executors (in-process, a process pool, Dask), reports, and the ``fmbench`` command.

Importing it first sets OpenMP's passive wait policy before torch loads (see ``fmcore._threads``).
"""

import fmcore  # noqa: F401 — first: sets OMP_WAIT_POLICY before torch starts its OpenMP runtime

__version__ = "0.2.0"
