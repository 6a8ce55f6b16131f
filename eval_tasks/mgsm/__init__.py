"""MGSM, 11 languages, zero-shot direct answers."""
