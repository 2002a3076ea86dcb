"""Generated sections inside hand-written markdown pages (docs/*.md).

The study and benchmark tools regenerate their numbers; the prose that reads
them is written by hand around them.  A tool replaces only the text between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, so a rerun keeps the prose.
"""
from __future__ import annotations

from pathlib import Path


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
