"""Plain-text tables for the terminal: left-aligned text, right-aligned numbers."""

from __future__ import annotations

from collections.abc import Sequence


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace("-", "", 1).isdigit()


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows under their header, columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(cell).rjust(width) if _numeric(str(cell)) else str(cell).ljust(width)
            for cell, width in zip(row, widths, strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])
