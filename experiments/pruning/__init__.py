"""Pruning experiments (LeNet-300-100 and LeNet-5 on mnist5k: accuracy against sparsity)."""
