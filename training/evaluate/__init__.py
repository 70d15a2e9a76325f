"""`tradeloop evaluate`: walk a history with the learning loop, the rules and a frozen release.

Modules: `walker` (the trader's walk subprocess), `checkpoint`, `loop` (arms,
retrain steps, resume), `stats` (Sharpe, bootstrap, DSR), `metrics` (per arm,
symbol and strategy; edges), `report` (HTML and JSON), `cli`.
"""
