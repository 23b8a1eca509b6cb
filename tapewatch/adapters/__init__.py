"""I/O shared by every process: PostgreSQL, Redis and the Binance REST client (the only place allowed to import them)."""
