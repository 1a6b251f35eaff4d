"""One-off measurement scripts (`python -m bench.scripts.NAME`); run from a checkout, not shipped in the wheel."""
