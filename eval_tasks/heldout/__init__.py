"""The training tasks' own held-out items (benchmark ``heldout``), one lm-eval task per training task."""
