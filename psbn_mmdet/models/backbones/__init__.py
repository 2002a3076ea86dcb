"""Backbones: ``PrunedResNet`` (registered in mmdet's ``MODELS`` on import)."""
