"""Safe checkpoint loading for mmengine under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10's
resume then fails on the classes its checkpoints pickle (the MessageHub's
``HistoryBuffer``, numpy arrays and scalars).  Safe loading stays on: we
allow-list exactly those classes.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> list:
    core = getattr(np, '_core', None) or np.core
    classes = [core.multiarray._reconstruct, core.multiarray.scalar,
               np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes as their concrete classes (Float64DType...)
    classes += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64,
                                            np.int32, np.bool_)]
    return classes


# HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer,
# 'min')``.  Allowing ``getattr`` lets a file read attributes of allow-listed
# objects only; the safe unpickler still refuses to *call* anything not listed.
# Empty numpy arrays (an empty HistoryBuffer) pickle their data as ``bytes``.
MMENGINE_CHECKPOINT_GLOBALS = [HistoryBuffer, getattr, bytes,
                               *_numpy_globals()]


def allow_mmengine_checkpoints() -> None:
    """Allow-list the classes mmengine checkpoints contain (idempotent)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
