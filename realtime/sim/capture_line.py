"""One line of the capture format (DESIGN.md §3) as the recorder writes it: the payload is JSON text already."""

from __future__ import annotations


def capture_line(recv: int, stream: str, data: str) -> str:
    """``{"recv":...,"stream":"...","data":...}`` and its newline; ``data`` is written as it is."""
    return f'{{"recv":{recv},"stream":"{stream}","data":{data}}}\n'
