"""Process logging: one line per record, secrets never formatted in."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str = "INFO") -> None:
    """Configure root logging once (level from the argument or LOG_LEVEL)."""
    level = os.environ.get("LOG_LEVEL", level).upper()
    root = logging.getLogger()
    if getattr(root, "_tradeloop_configured", False):
        root.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "botocore", "urllib3", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    root._tradeloop_configured = True  # type: ignore[attr-defined]
