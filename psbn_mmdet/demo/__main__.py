"""``python -m psbn_mmdet.demo``: see :mod:`psbn_mmdet.demo.compare`."""
import sys

from ..cli import run_tool
from .compare import main

sys.exit(run_tool('demo', main))
