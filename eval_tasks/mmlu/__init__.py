"""MMLU, 0-shot and 5-shot, with lm-eval's MMLU prompt."""
