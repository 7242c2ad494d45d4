"""``python -m benchmarks``: run the benchmark (``--quick`` for a smoke run)."""

import sys

from benchmarks.run import main

sys.exit(main())
