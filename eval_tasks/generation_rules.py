"""Names of the rules by which a generation chunk ends and its rows' texts are cut."""

# How a generation chunk ends and its rows' texts are cut, recorded with every result
# (settings.generation_rule) so that a report never ranks texts of two rules against each other: the
# rules differ in any dtype where a stop string is a special token that is not an EOS. Stock shapes (and
# lm-eval's HFLM itself) end a chunk where HF generate under lm-eval ends it and decode each text from all
# its chunk's tokens (eval_tasks/greedy.py); fast shapes, and stock shapes before f4bd08b, cut each row at its
# own first stop string, which gave other texts for 22% of Qwen2.5-Coder-1.5B's BBH items (README).
STOCK_GENERATION_RULE = "hf-generate chunks"
OWN_STOP_GENERATION_RULE = "each row to its own first stop"
