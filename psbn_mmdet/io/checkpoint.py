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


# ------------------------------------------------------------ safe loading
def _what_is(head: bytes) -> str:
    """What a file that is not a loadable checkpoint looks like."""
    if not head:
        return 'an empty file'
    if head.startswith(b'PK\x03\x04'):
        return 'a zip archive'
    if head[:1] == b'\x80' and len(head) > 1 and head[1] <= 5:
        return f'a Python pickle (protocol {head[1]})'
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return 'binary data, neither a zip archive nor a pickle'
    if text.isprintable() or all(c.isprintable() or c.isspace()
                                 for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ''
        return f'a text file ({first!r}...)' if first else 'a blank text file'
    return 'binary data, neither a zip archive nor a pickle'


def _pickle_globals(path: str, zipped: bool) -> list[str]:
    """Names a checkpoint's pickles would import, read without running them
    (``pickletools``): what safe loading refuses is among them."""
    import io
    import pickletools
    import zipfile
    try:
        if zipped:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist()
                            if n.endswith('data.pkl'))
                data = archive.read(name)
        else:
            with open(path, 'rb') as f:
                data = f.read()
    except Exception:  # noqa: BLE001 - unreadable: no names to show
        return []
    stream, names, strings = io.BytesIO(data), [], []
    try:  # a legacy checkpoint is several pickles in a row
        while stream.tell() < len(data):
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ('GLOBAL', 'INST'):
                    names.append(arg.replace(' ', '.'))
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    names.append(f'{strings[-2]}.{strings[-1]}')
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - the rest is not a pickle
        pass
    return names


def _allowed(name: str) -> bool:
    safe = {f'{getattr(g, "__module__", "")}.{getattr(g, "__qualname__", "")}'
            for g in torch.serialization.get_safe_globals()
            if not isinstance(g, tuple)}
    return (name in safe or name.split('.')[0] == 'torch'
            or name == 'collections.OrderedDict')


def safe_load(path, mmap: bool = False):
    """``torch.load(path, weights_only=True)`` on the CPU, for the tools.

    Safe loading stays on (mmengine's checkpoint classes are allow-listed by
    ``import psbn_mmdet``).  ``mmap``: memory-map a zip checkpoint, so that
    only the tensors read are read (legacy files load whole).

    Raises:
        UserError: one line saying what the file is when it is not a
            checkpoint (empty, text, random bytes, truncated), or what safe
            loading refused in it.  Safe loading is never turned off.
    """
    import os.path as osp
    import warnings

    from ..utils.errors import UserError
    path = str(path)
    if not osp.isfile(path):
        raise UserError(f'{path}: ' + ('is a directory' if osp.isdir(path)
                                       else 'no such file'))
    with open(path, 'rb') as f:
        head = f.read(64)
    zipped = head.startswith(b'PK\x03\x04')
    try:
        with warnings.catch_warnings():  # e.g. on pickles of a new protocol
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True,
                              mmap=mmap and zipped)
    except Exception as error:  # noqa: BLE001 - an unloadable file
        if 'Weights only load failed' in str(error):
            refused = [n for n in _pickle_globals(path, zipped)
                       if not _allowed(n)]
            if refused:
                raise UserError(
                    f'{path}: refused by safe loading: it would import '
                    f'{", ".join(dict.fromkeys(refused))}, which is not '
                    'allow-listed') from None
        if zipped:
            raise UserError(f'{path}: truncated or corrupt PyTorch checkpoint '
                            '(a zip archive that torch cannot read)') from None
        raise UserError(f'{path}: not a PyTorch checkpoint: it is '
                        f'{_what_is(head)}') from None


def check_state_dict(expected, state, what: str, prefix: str = '') -> None:
    """Raise unless ``state`` loads strictly where ``expected`` (a model's
    state dict) is: one line with the missing, unexpected and mismatched key
    counts and the first offending key (``prefix`` + key)."""
    from ..utils.errors import UserError
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected
                  if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        first = (missing or unexpected or mismatched)[0]
        raise UserError(
            f'{what}: {len(missing)} missing, {len(unexpected)} unexpected, '
            f'{len(mismatched)} mismatched keys (first: {prefix}{first})')
