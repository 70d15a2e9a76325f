"""Local simulators of real venues, each speaking its venue's wire protocol over loopback.

`SIMULATORS` maps a venue name to the import path of its runner, a coroutine
function `run(settings, host, port, echo, *, seed, days, bar_ms, wait_for_client,
session)`
that serves until cancelled and first calls `echo` with the settings a trader
uses to reach it (`tradeloop venues sim NAME --port PORT`).
"""

from __future__ import annotations

#: venue name -> "module:runner"
SIMULATORS: dict[str, str] = {
    "ib": "trader.venues.sims.ib_run:run",
    "projectx": "trader.venues.sims.projectx_run:run",
    "rithmic": "trader.venues.sims.rithmic_run:run",
}
