"""Fixtures of the REST client tests: a fake clock and the local HTTP server that plays Binance's REST API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adapters.rest_test_server import FakeClock, RestTestServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[RestTestServer]:
    with RestTestServer(clock) as srv:
        yield srv
