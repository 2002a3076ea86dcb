"""Checkpoints (safe loading, one format reader, one writer) and models built from configs."""
from .builders import (build_model, load_backbone, load_detector, load_weights,
                       mmdet_registries)
from .checkpoint import (Checkpoint, allow_mmengine_checkpoints,
                         check_state_dict, latest_checkpoint, read_checkpoint,
                         safe_load, save_model)

__all__ = ['Checkpoint', 'allow_mmengine_checkpoints', 'build_model',
           'check_state_dict', 'latest_checkpoint', 'load_backbone',
           'load_detector', 'load_weights', 'mmdet_registries',
           'read_checkpoint', 'safe_load', 'save_model']
