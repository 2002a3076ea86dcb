"""Plain-text tables, as the tools print them."""
from __future__ import annotations


def text_table(rows: list[list[str] | str]) -> str:
    """Rows of cells in aligned columns, the first to the left and the
    others to the right, two spaces apart.  A ``str`` row is a heading:
    printed as it is and left out of the column widths."""
    cells = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(row[i]) for row in cells)
              for i in range(len(cells[0]))]
    return '\n'.join(
        row if isinstance(row, str) else '  '.join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows)
