"""Collapse study: BN vs psBN on a real (tiny) image data set, on CPU.

Reproduces, at CPU scale, the filter collapse that Mehta et al. (2019) and
Zhou et al. (2020) describe, and measures what psBN and each candidate rule of
its recovery change.  Split along its seams:

* :mod:`.data`: scikit-learn's digits;
* :mod:`.networks`: BasicNet and mmdet's ResNet-18;
* :mod:`.variants`: BN, psBN as shipped and the candidate recovery rules;
* :mod:`.training`: optimizer regimes and one run with its measurements;
* :mod:`.grid`: the grid of runs and the worker pool;
* :mod:`.render`: aggregation over seeds, tables and figures;
* ``python -m research.collapse_study``: the command line
  (docs/collapse_study.md holds the results).
"""
from .grid import full_grid, quick_grid, run_jobs
from .networks import build_network
from .training import Job, accuracy, dead_percent, head_pre_relu, run
from .variants import VARIANTS

__all__ = ['Job', 'VARIANTS', 'accuracy', 'build_network', 'dead_percent',
           'full_grid', 'head_pre_relu', 'quick_grid', 'run', 'run_jobs']
