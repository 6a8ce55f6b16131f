"""Data layer: where benchmark files live, how each source format is read, and how training
budgets are drawn. See ``registry.py`` for the list of tasks."""
