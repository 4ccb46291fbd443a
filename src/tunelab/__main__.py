"""`python -m tunelab`: the same as the `tunelab` command (the worker is started this way)."""

import sys

from tunelab.cli import main

sys.exit(main())
