"""Runs: a validated run config (``runconfig``, ``profiles``), its execution (``runner``), the run
store and its typed record (``store``), and sweeps (``sweep``). Imports the method table and the
layers below it; never the CLI. This package imports nothing itself, so the report can read
``store`` and ``profiles`` without torch."""
