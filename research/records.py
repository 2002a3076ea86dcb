"""Run records: the JSON files the studies write with ``--json`` and render
again with ``--from-json``."""
from __future__ import annotations

import json
from pathlib import Path

from psbn_mmdet.utils.errors import UserError


def read_records(paths) -> list:
    """Each path's JSON record, in order; a file that cannot be read or
    parsed is a one-line :class:`UserError` naming it."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise UserError(f'cannot read {path}: {error}') from None
    return records
