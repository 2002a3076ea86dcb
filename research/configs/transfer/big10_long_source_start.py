# The starts of issue 38 (research.detection_study.transfer STARTS) for big10_long:
# big10's (big10_source_start.py), from big10_long's 3000-iteration
# source pretrain.
_base_ = './big10_source_start.py'
load_from = 'work_dirs/screen38/big10_long_source_pretrain/iter_3000.pth'
