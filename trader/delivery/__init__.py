"""Model delivery: release verification, the helper process, hot swap and the canary."""
