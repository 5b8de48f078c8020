"""Training infrastructure of the three trainers: the fold loop's bookkeeping, checkpoints, run
folders, splits, schedule, mixed precision, DDP plumbing, seeds."""
