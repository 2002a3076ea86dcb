"""Layers and backbones registered in mmengine's and mmdet's ``MODELS``."""
