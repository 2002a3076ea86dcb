"""Layers (psBN, psSyncBN) and backbones (``PrunedResNet``) for mmengine's and mmdet's ``MODELS``.

``psbn_mmdet.models.layers`` is imported with the package;
``psbn_mmdet.models.backbones`` imports mmdet and is imported by the configs
that use ``PrunedResNet``.
"""
