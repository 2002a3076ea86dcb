"""The overhead benchmark's command line: bad counts are one line, exit 2,
and nothing is written."""
import pytest

from conftest import REPO, run_tool


@pytest.mark.parametrize('option, value, message', [
    ('--pairs', '0', '--pairs must be at least 1, got 0'),
    ('--windows', '0', '--windows must be at least 1'),
])
def test_bad_counts_are_one_line(tmp_path, option, value, message):
    out = tmp_path / 'b.md'
    result = run_tool('-m', 'research.benchmark', option, value, '--out', out,
                      cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f'benchmark: error: {message}']
    assert not out.exists()
