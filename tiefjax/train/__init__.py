"""Training: device mesh, the generic loop, the three tasks, the frozen-encoder feature cache."""
