"""``python -m research.detection_study {demo,transfer} ARGS...``."""
from __future__ import annotations

import sys

from psbn_mmdet.cli import run_tool

from . import demo, transfer

STUDIES = {'demo': demo, 'transfer': transfer}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in STUDIES:
        print('usage: python -m research.detection_study {demo,transfer} '
              'ARGS... (--help after the cell family for its options)',
              file=sys.stderr)
        return 2
    study = STUDIES[argv[0]]
    return run_tool(study.PROG, study.main, argv[1:])


if __name__ == '__main__':
    sys.exit(main())
