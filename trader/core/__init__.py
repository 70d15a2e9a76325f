"""The hot path: the engine, bars, instruments, strategies, decisions, risk and statistics."""
