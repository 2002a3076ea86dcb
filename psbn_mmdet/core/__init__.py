"""Plain PyTorch, no mmengine: where BNs sit, collapse criteria, window statistics, the revival rules, the post-shift controller."""
from .controller import OPTIMIZER_RESETS, PostShiftController, WindowResult
from .criteria import (ACTIVATION_THRESHOLD, ADAPTIVE_OPTIMIZERS,
                       GAMMA_THRESHOLD, ChannelMax, channel_max,
                       collapse_regime, collapsed_gamma, dead_activation,
                       per_stage)
from .optimizer_state import SECOND_MOMENTS, reset_optimizer_state
from .revival import (DEFAULT_REVIVAL, REINIT_SCALES, REVIVALS, Unit,
                      applied_rule, check_revival, draw_seed,
                      first_window_rule, fresh_rule, plan, reinit_,
                      units_of)
from .roles import (PRE_ADD, PRE_RELU, STAGES, BNRole, InnerLink, inner_links,
                    roles_from_model, roles_from_names, unplaced)
from .statistics import (DEFAULT_WINDOW, PostShiftable, WindowStatistics,
                         is_trainable, is_training_pass)

__all__ = [
    'ACTIVATION_THRESHOLD', 'ADAPTIVE_OPTIMIZERS', 'collapse_regime',
    'BNRole', 'ChannelMax', 'DEFAULT_REVIVAL',
    'DEFAULT_WINDOW', 'REINIT_SCALES', 'REVIVALS', 'Unit', 'applied_rule',
    'check_revival',
    'draw_seed', 'first_window_rule', 'fresh_rule', 'plan', 'reinit_',
    'units_of',
    'reset_optimizer_state', 'SECOND_MOMENTS',
    'GAMMA_THRESHOLD', 'InnerLink', 'OPTIMIZER_RESETS', 'PRE_ADD', 'PRE_RELU',
    'PostShiftController', 'PostShiftable', 'STAGES', 'WindowResult',
    'WindowStatistics', 'channel_max', 'collapsed_gamma', 'dead_activation',
    'inner_links', 'is_trainable', 'is_training_pass', 'per_stage',
    'roles_from_model', 'roles_from_names', 'unplaced'
]
