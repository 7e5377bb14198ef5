"""Quantization experiments (LeNet-5 on mnist5k: accuracy against bits)."""
