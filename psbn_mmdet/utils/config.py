"""Reading an mmengine config for the tools: one-line errors, nothing printed."""
from __future__ import annotations

import contextlib
import io
import os.path as osp

from mmengine.config import Config

from .errors import UserError, one_line


def load_config(path, cfg_options: dict | None = None):
    """``mmengine.Config.fromfile(path)`` merged with ``cfg_options``.

    Raises:
        UserError: the file is missing, or reading or merging it fails (a
            syntax error, a bad ``_base_``, a NameError...), with one line
            naming the file and the cause.
    """
    path = str(path)
    if not osp.isfile(path):
        raise UserError(f'config file not found: {path}')
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = Config.fromfile(path)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
    except Exception as error:  # noqa: BLE001 - any failure is the config's
        raise UserError(f'cannot read config {path}: {one_line(error)}'
                        ) from None
    return cfg
