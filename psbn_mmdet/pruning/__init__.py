"""Removing dead channels exactly: the plan, the surgery, costs, verification, the tool's pipeline."""
from .calibrate import Calibration, calibrate, compositions
from .costs import (StageCost, removable_column, removable_flops,
                    removable_per_stage, stage_costs)
from .plan import (CHECK_TOLERANCE, SUPPORTED, ChannelPlan, InternalBN,
                   find_removable, internal_bns)
from .prune_dead import (DEFAULT_EVAL_IMAGES, DEFAULT_NUM_IMAGES, PruneResult,
                         format_result, prune_dead)
from .surgery import block_widths, prune_state_dict, pruned_config
from .verify import relative_difference, self_check

__all__ = ['CHECK_TOLERANCE', 'Calibration', 'ChannelPlan',
           'DEFAULT_EVAL_IMAGES', 'DEFAULT_NUM_IMAGES', 'InternalBN',
           'PruneResult', 'SUPPORTED', 'StageCost', 'block_widths',
           'calibrate', 'compositions', 'find_removable', 'format_result',
           'internal_bns', 'prune_dead', 'prune_state_dict', 'pruned_config',
           'relative_difference', 'removable_column', 'removable_flops',
           'removable_per_stage', 'self_check', 'stage_costs']
