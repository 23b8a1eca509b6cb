"""tapewatch: order-flow signals for Binance USD-M perpetual futures (signals only, never orders)."""

__version__ = "0.1.0"
