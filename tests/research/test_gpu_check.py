"""research.gpu_check runs its code on the CPU at a tiny size (CI has no GPU)."""
import json

import pytest

from research.gpu_check import main


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(in_workspace, tmp_path, capsys):
    out = tmp_path / 'gpu.json'
    main(['--device', 'cpu', '--pairs', '1', '--repeat', '1', '--json',
          str(out)])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    names = [row['name'] for row in record['rows']]
    assert names == [
        'train step, fp32, batch 2 at 256x192: psBN / BN',
        'train step, fp32, batch 2 at 256x192: BN / BN copy (noise floor)']
    assert all(row['ratios'][0] > 0 for row in record['rows'])
    assert record['identical'] is True
    assert record['window_end_ms'] > record['between_ms'] >= 0
    assert any('AMP rows: skipped' in line for line in record['skipped'])
    assert 'bit for bit: yes' in printed and '| what |' in printed


def test_gpu_check_without_a_gpu_is_one_line(capsys):
    import torch

    from psbn_mmdet.cli import run_tool
    if torch.cuda.is_available():
        pytest.skip('a GPU is here')
    assert run_tool('gpu_check', main, ['--device', 'cuda']) == 2
    assert 'no GPU here' in capsys.readouterr().err
