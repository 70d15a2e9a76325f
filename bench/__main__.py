"""`python -m bench [--quick] [--only NAME]`: run the benchmarks and write the results."""

from __future__ import annotations

import sys

from bench.harness import main

sys.exit(main())
