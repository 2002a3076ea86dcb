"""Checkpoints: safe loading, one reader of their formats, one writer.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10's
resume then fails on the classes its checkpoints pickle (the MessageHub's
``HistoryBuffer``, numpy arrays and scalars).  Safe loading stays on: we
allow-list exactly those classes (:func:`allow_mmengine_checkpoints`).

:func:`read_checkpoint` reads any checkpoint the tools accept (an
mmengine/mmdet file, a torchvision ResNet state dict, a bare state dict) and
says which it was; :func:`save_model` writes a config and its weights
together, all or nothing.
"""
from __future__ import annotations

import io
import os.path as osp
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from ..utils.errors import UserError
from ..utils.files import write_atomically


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
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected
                  if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        first = (missing or unexpected or mismatched)[0]
        raise UserError(
            f'{what}: {len(missing)} missing, {len(unexpected)} unexpected, '
            f'{len(mismatched)} mismatched keys (first: {prefix}{first})')


# ------------------------------------------------------------ formats
#: what :func:`read_checkpoint` recognizes
FORMATS = ('mmengine', 'torchvision', 'bare')
#: the parts of an mmengine checkpoint that only resuming needs
RESUME_KEYS = ('message_hub', 'optimizer')


@dataclass
class Checkpoint:
    """A checkpoint's tensors and what kind of file it was."""
    path: str
    format: str  # one of FORMATS
    state: dict[str, torch.Tensor]  # every tensor, a ``module.`` prefix removed
    meta: dict = field(default_factory=dict)  # mmengine's ``meta`` (or {})
    resumable: bool = False  # carries the optimizer and MessageHub state

    @property
    def backbone_prefix(self) -> str:
        """``'backbone.'`` for a detector's checkpoint, else ``''``."""
        return 'backbone.' if any(k.startswith('backbone.')
                                  for k in self.state) else ''

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors, their prefix removed."""
        prefix = self.backbone_prefix
        return {k[len(prefix):]: v for k, v in self.state.items()
                if k.startswith(prefix)}


def read_checkpoint(path, mmap: bool = False) -> Checkpoint:
    """Read a checkpoint (:func:`safe_load`) and detect its format.

    Raises:
        UserError: the file cannot be loaded, or holds no state dict.
    """
    obj = safe_load(path, mmap=mmap)
    fmt, meta, resumable = 'bare', {}, False
    if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
        fmt, meta = 'mmengine', dict(obj.get('meta') or {})
        resumable = all(key in obj for key in RESUME_KEYS)
        obj = obj['state_dict']
    if not isinstance(obj, Mapping):
        raise UserError(f'{path}: not a checkpoint (no state dict in it)')
    state = {k.removeprefix('module.'): v for k, v in obj.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f'{path}: not a checkpoint (no tensors in it)')
    if (fmt == 'bare' and 'conv1.weight' in state
            and any(k.startswith('layer1.') for k in state)):
        fmt = 'torchvision'
    return Checkpoint(str(path), fmt, state, meta, resumable)


def save_model(cfg, state: Mapping[str, torch.Tensor], meta: dict,
               config_path, checkpoint_path) -> None:
    """Write ``cfg`` (an mmengine ``Config``) and a weights-only checkpoint
    of ``state`` (``meta`` kept, its ``cfg`` replaced by this config), both
    or neither.  The checkpoint loads with ``torch.load(weights_only=True)``
    and strictly into the config's model."""
    meta = {k: v for k, v in meta.items() if k != 'cfg'}
    meta['cfg'] = cfg.pretty_text
    weights = io.BytesIO()
    torch.save({'meta': meta, 'state_dict': dict(state)}, weights)
    write_atomically({config_path: cfg.pretty_text.encode(),
                      checkpoint_path: weights.getvalue()})


def latest_checkpoint(work_dir) -> str | None:
    """The checkpoint an mmengine work dir's ``last_checkpoint`` names
    (mmengine's ``find_latest_checkpoint``), None when the run saved none.

    mmengine writes the path as the run saw it; a work dir moved or opened
    from another directory since is looked into for the same file name.

    Raises:
        UserError: ``last_checkpoint`` names a file that exists in neither
            place.
    """
    from mmengine.runner import find_latest_checkpoint  # the runner stack
    pointer = osp.join(str(work_dir), 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    named = find_latest_checkpoint(str(work_dir))
    for path in (named, osp.join(str(work_dir), osp.basename(named))):
        if osp.isfile(path):
            return path
    raise UserError(f'{pointer} names {named}, which does not exist')
