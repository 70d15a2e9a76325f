"""The test kit: synthetic events, lakes, bars and the worker harness."""
