"""Atomic writes: all files or none, with the mode the umask gives."""
from __future__ import annotations

import os
import stat

import pytest

from psbn_mmdet.utils import write_atomically


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600),
                                         (0o002, 0o664)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    """As open(path, 'w') and mmengine's own files: 0644 under the usual
    umask, not the private 0600 of a temporary file."""
    old = os.umask(umask)
    try:
        write_atomically({tmp_path / 'a.json': b'{}',
                          tmp_path / 'sub' / 'b.png': b'png'})
    finally:
        os.umask(old)
    for path in (tmp_path / 'a.json', tmp_path / 'sub' / 'b.png'):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
