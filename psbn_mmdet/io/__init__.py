"""Checkpoints (safe loading, formats, writing) and building models from configs."""
