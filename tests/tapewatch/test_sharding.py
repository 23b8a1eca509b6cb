"""Shards partition the universe stably: every symbol has exactly one owner, the same in every process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tapewatch.sharding import WHOLE, Shard, parse_shard, shard_of

SYMBOLS = [f"SYM{i}USDT" for i in range(400)] + ["BTCUSDT", "ETHUSDT"]


def test_every_symbol_has_exactly_one_owner() -> None:
    shards = [Shard(i, 3) for i in range(3)]
    owned = [s.select(SYMBOLS) for s in shards]
    assert sorted(s for part in owned for s in part) == sorted(SYMBOLS)
    assert all(len(part) > 80 for part in owned)  # spread, not all on one shard


def test_the_partition_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process; the partition must not be
    code = "from tapewatch.sharding import shard_of; print([shard_of(f'SYM{i}USDT', 4) for i in range(50)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([shard_of(f"SYM{i}USDT", 4) for i in range(50)])


def test_whole_owns_everything() -> None:
    assert WHOLE.whole and WHOLE.select(SYMBOLS) == SYMBOLS


@pytest.mark.parametrize(("text", "shard"), [("0/2", Shard(0, 2)), (" 1 / 2 ", Shard(1, 2)), ("0/1", WHOLE)])
def test_parse(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert parse_shard(shard.label) == shard


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0", ""])
def test_parse_rejects_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="I/N"):
        parse_shard(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-1/2", "shard index must be within 0..1"),
        ("2/2", "shard index must be within 0..1"),
        ("0/0", "shard count N must be at least 1"),
        ("x", "a shard is I/N, like 0/2"),
    ],
)
def test_the_error_says_what_is_wrong_and_names_no_option(text: str, says: str) -> None:
    # the value comes from --shard or TAPEWATCH_SHARD: the caller names which
    with pytest.raises(ValueError, match=says) as raised:
        parse_shard(text)
    assert "--shard" not in str(raised.value)
