"""The pruning benchmark: bad input, and (slow) one small detector measured
end to end into a docs page."""
import json

import pytest

from research import prune_benchmark as bench
from research.markdown import markers


def _run(*args):
    from psbn_mmdet.cli import run_tool
    return run_tool(bench.PROG, bench.main, [str(a) for a in args])


def test_missing_demo_finetune_is_one_line(tmp_path, capsys):
    assert _run('--work-dirs', tmp_path, '--out', tmp_path / 'b.md') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no last_checkpoint' in err
    assert not (tmp_path / 'b.md').exists()


@pytest.mark.parametrize('option', ['--pairs', '--threads'])
def test_counts_must_be_positive(tmp_path, capsys, option):
    assert _run(option, 0, '--out', tmp_path / 'b.md') == 2
    assert f'{option} must be at least 1' in capsys.readouterr().err


@pytest.mark.slow
def test_small_detector_is_pruned_timed_and_written(workspace, tmp_path):
    from pruning.test_prune import detector_checkpoint, write_config
    config = write_config(tmp_path, workspace)
    checkpoint = detector_checkpoint(config, tmp_path / 'r18.pth')
    page = tmp_path / 'benchmarks.md'
    page.write_text('# Benchmarks\n\nprose\n')
    record = tmp_path / 'runs.json'
    assert _run('--detector', 'crafted', config, checkpoint, '--pairs', 1,
                '--num-images', 2, '--batch', 1, '--threads', 1,
                '--out', page, '--json', record) == 0
    text = page.read_text()
    runs = json.loads(record.read_text())['runs']
    assert [run['removed'] for run in runs] == [23]
    assert len(runs[0]['rows']) == 12 and all(
        len(row['ratios']) == 1 for row in runs[0]['rows'])
    begin, end = markers('prune')
    assert text.startswith('# Benchmarks\n\nprose\n') and begin in text
    section = text.split(begin)[1].split(end)[0]
    assert 'removed 23 of 240 block-internal channels' in section
    assert 'self-check on 2 calibration images' in section
    assert 'border effect:' in section
    table, summary = section.split('Summary:')
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert [row.split(' | ')[0] for row in rows[1:]] == [
        f'| {part}, 1 images 96x128, {layout}, 1 thread{aa}'
        for layout in ('NCHW', 'NHWC', 'NHWC+fused')
        for part in ('backbone', 'detector (predict)') for aa in ('', ': A/A')]
    assert '| crafted |' in summary and 'NHWC+fused, 1 thread' in summary
    check = section.split('against the first original: ')[1].split(' (')[0]
    assert [part.split()[0] for part in check.split(', ')] == [
        'NCHW', 'NHWC', 'NHWC+fused']
    assert all(float(part.split()[1]) < 1e-5 for part in check.split(', '))
