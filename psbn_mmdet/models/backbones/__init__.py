"""Backbones: ``PrunedResNet`` (importing this package imports mmdet and registers it in mmdet's ``MODELS``)."""
from .pruned_resnet import PrunedResNet

__all__ = ['PrunedResNet']
