"""The realtime service: Binance transport, book sync, capture/replay, the simulated exchange."""
