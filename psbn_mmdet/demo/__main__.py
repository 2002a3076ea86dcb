"""``python -m psbn_mmdet.demo``: see :mod:`psbn_mmdet.demo.cli`."""
import sys

from ..cli import run_tool
from .cli import main

sys.exit(run_tool('demo', main))
