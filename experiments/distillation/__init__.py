"""Knowledge distillation experiments (see docs/distillation.md)."""
