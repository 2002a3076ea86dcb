"""Plain PyTorch, no mmengine: where BNs sit, collapse criteria, window statistics, the post-shift controller."""
from .controller import OPTIMIZER_RESETS, PostShiftController, WindowResult
from .criteria import (ACTIVATION_THRESHOLD, GAMMA_THRESHOLD, ChannelMax,
                       channel_max, collapsed_gamma, dead_activation,
                       per_stage)
from .roles import (PRE_ADD, PRE_RELU, STAGES, BNRole, InnerLink, inner_links,
                    roles_from_model, roles_from_names, unplaced)
from .statistics import (DEFAULT_WINDOW, PostShiftable, WindowStatistics,
                         is_trainable, is_training_pass)

__all__ = [
    'ACTIVATION_THRESHOLD', 'BNRole', 'ChannelMax', 'DEFAULT_WINDOW',
    'GAMMA_THRESHOLD', 'InnerLink', 'OPTIMIZER_RESETS', 'PRE_ADD', 'PRE_RELU',
    'PostShiftController', 'PostShiftable', 'STAGES', 'WindowResult',
    'WindowStatistics', 'channel_max', 'collapsed_gamma', 'dead_activation',
    'inner_links', 'is_trainable', 'is_training_pass', 'per_stage',
    'roles_from_model', 'roles_from_names', 'unplaced'
]
