"""Event contracts, the Faust worker, the parquet lake sink and replay."""
