"""Training: the shared loop (optimizer, schedule, precision, DDP, checkpoints) and its stages."""
