"""``ws_silent_ms``: how long the websockets delivered nothing while they were meant to (what the connectivity
sensor judges the primary feed by; the heartbeat beats whether or not data arrives)."""

from __future__ import annotations

from realtime.service_publish import WsSilence


def test_silence_grows_while_no_frame_arrives_and_resets_on_one() -> None:
    silence = WsSilence(frames=100, now_s=10.0)
    assert silence.update(100, 10.0, expected=True) == 0
    assert silence.update(100, 41.5, expected=True) == 31_500
    assert silence.update(101, 42.0, expected=True) == 0
    assert silence.update(101, 43.0, expected=True) == 1_000


def test_silence_is_not_counted_while_no_frame_is_expected() -> None:
    # the backup feed is on (websockets off by design) or the universe is empty
    silence = WsSilence(frames=5, now_s=0.0)
    assert silence.update(5, 600.0, expected=False) == 0
    # back on the websockets: the silence counts from the switch, not from the last frame before it
    assert silence.update(5, 602.0, expected=True) == 2_000
