"""`python -m bench` is the same as the `fibrobench` console script."""
import sys

from bench.cli import main

sys.exit(main())
