"""BIG-Bench Hard: answer-only, chain-of-thought and log-likelihood variants."""
