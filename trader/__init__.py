"""The live trader: feeds, strategies, decisions, risk, paper broker, outbox, API."""
