"""The README starts with the two commands and documents every setting."""

from __future__ import annotations

from infra.settings import Settings
from tests import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    head = README[: README.index("## Architecture")]
    assert "make demo" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    missing = [
        f.validation_alias
        for f in Settings.model_fields.values()
        if f"`{f.validation_alias}`" not in README
    ]
    assert not missing, f"README lacks settings: {missing}"
