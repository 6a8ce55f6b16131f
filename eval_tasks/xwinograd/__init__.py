"""XWinograd, 6 languages, zero-shot partial scoring."""
