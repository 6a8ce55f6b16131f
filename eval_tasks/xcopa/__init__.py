"""XCOPA, 11 languages, zero-shot."""
