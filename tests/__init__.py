"""The test suite; its layout mirrors the packages."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]
