"""fmbench harness: timing helpers, benchmark suites (pytest-benchmark), sweeps and reports."""
