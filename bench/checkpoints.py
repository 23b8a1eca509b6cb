"""What a book checkpoint costs the realtime service's event loop (realtime/checkpoints.py): every synced book
of a replayed capture turned into its ``control:book_checkpoint`` line, best of 3, wall time.

Usage: ``.venv/bin/python bench/checkpoints.py [CAPTURE...]`` (default: the 800-symbol, 3-minute sim capture
that ``bench/run.py`` records once under ``var/bench/``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import msgspec  # noqa: E402

from realtime.capture import iter_capture  # noqa: E402
from tapewatch.market import Market  # noqa: E402
from tapewatch.parse import FrameDecoder  # noqa: E402


def main() -> None:
    if len(sys.argv) > 1:
        paths = [Path(p) for p in sys.argv[1:]]
    else:
        from run import sim_capture

        paths = [sim_capture(800, 3)]
    market, decoder = Market(), FrameDecoder()
    for line in iter_capture(paths):
        frame = decoder.decode_capture_line(line)
        if frame is not None:
            market.on_frame(frame)
    encode = msgspec.json.Encoder().encode
    best, books, levels, size = float("inf"), 0, 0, 0
    for _ in range(3):
        started = time.perf_counter()
        books = levels = size = 0
        for st in market.symbols.values():
            cp = st.book.checkpoint()
            if cp is not None:
                size += len(encode(cp))
                books += 1
                levels += len(cp.bids) + len(cp.asks)
        best = min(best, time.perf_counter() - started)
    print(
        f"book checkpoint of {books} synced books ({levels:,} levels, {size / 1e6:.1f} MB of JSON): "
        f"{best * 1000:.0f} ms on the event loop (best of 3), {best / max(books, 1) * 1e6:.0f} µs per book"
    )


if __name__ == "__main__":
    main()
