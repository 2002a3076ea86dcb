"""Generated sections keep the hand-written prose around them."""
from research.markdown import markers, write_generated


def test_rewrites_only_between_markers(tmp_path):
    page = tmp_path / 'page.md'
    begin, end = markers('bench')
    page.write_text(f'# Title\n\nprose before\n{begin}\nold numbers\n{end}\n'
                    'prose after\n')
    write_generated(page, 'bench', 'new numbers\n', title='ignored')
    assert page.read_text() == (f'# Title\n\nprose before\n{begin}\n'
                                f'new numbers\n{end}\nprose after\n')


def test_creates_a_missing_page_and_appends_to_one_without_markers(tmp_path):
    page = tmp_path / 'docs' / 'new.md'
    write_generated(page, 'study', 'table', title='Study')
    begin, end = markers('study')
    assert page.read_text() == f'# Study\n\n{begin}\ntable\n{end}\n'
    # another section's markers do not count: appended, nothing lost
    write_generated(page, 'bench', 'x', title='Bench')
    b_begin, b_end = markers('bench')
    assert page.read_text() == (f'# Study\n\n{begin}\ntable\n{end}\n\n'
                                f'{b_begin}\nx\n{b_end}\n')
