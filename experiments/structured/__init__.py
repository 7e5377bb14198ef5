"""Structured pruning experiments (channels removed for real on mnist5k: accuracy, FLOPs, speed)."""
