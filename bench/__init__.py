"""fibrobench harness: the CLI, job orchestration, executors and cost measurement."""
__version__ = "0.1.0"
