"""Training mechanics shared by every method: options (``config``), budget rules (``budget``),
balanced samplers (``sampling``), loss weighting (``weighting``), batches and loss (``batching``),
the step loop (``loop``), checkpoints, adapters and their files, supervised multi-task training.
Imports only the data layer and the bottom helpers; never a method or the run layer."""
