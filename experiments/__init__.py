"""Experiments at paper scale, each runnable as a CPU ``--dry-run`` on tiny models.

Each folder holds a ``config.toml`` (the paper's setup, plus a ``[dry_run]`` table
that swaps the models for tiny random ones of the same family and shrinks the
budgets), a README (paper, headline numbers, hardware, exact command) and a
``run.py`` that runs the pipeline through the same Python API a GPU user runs.
``python -m experiments.run NAME [--dry-run]`` is the entry point.
"""
