"""Generated sections inside hand-written markdown pages (docs/*.md).

The study and benchmark tools regenerate their numbers; the prose that reads
them is written by hand around them.  A tool replaces only the text between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, so a rerun keeps the prose.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from research.records import read_records


def markers(name: str) -> tuple[str, str]:
    return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def write_generated(path: str | Path, name: str, body: str,
                    title: str) -> None:
    """Put ``body`` between ``name``'s markers in ``path``.

    A missing file is created as ``# title`` and the marked body; a file
    without the markers gets the marked body appended (nothing is lost).
    """
    begin, end = markers(name)
    section = f'{begin}\n{body.strip()}\n{end}'
    path = Path(path)
    text = path.read_text() if path.exists() else ''
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    elif text:
        text = text.rstrip('\n') + f'\n\n{section}\n'
    else:
        text = f'# {title}\n\n{section}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def render_records_main(argv, prog: str, description: str, name: str,
                        title: str, render: Callable[[list[dict]], str]) -> int:
    """A renderer's command line: the runs of JSON records through
    ``render``, printed, and with ``--out PAGE`` put between ``name``'s
    markers there, after the command that made them."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('records', nargs='+', help='JSON records of runs')
    parser.add_argument('--out', help='markdown page: the tables go between '
                        f'its {name} markers')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = [r for record in read_records(args.records)
            for r in record['runs']]
    text = render(runs)
    print(text)
    if args.out:
        command = ' '.join([prog, *args.records, '--out', args.out])
        write_generated(args.out, name, f'Command: `{command}`\n\n{text}',
                        title=title)
    return 0
