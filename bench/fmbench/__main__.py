"""``python -m fmbench`` is the ``fmbench`` command."""

import sys

from fmbench.cli import main

sys.exit(main())
