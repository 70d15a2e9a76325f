"""`--venue ib` from the settings, and `tradeloop venues sim` naming what it knows."""

from __future__ import annotations

from click.testing import CliRunner

from infra.settings import Settings
from trader.venues import venue_for
from trader.venues.ib import IbVenue
from trader.venues.sims.cli import venues


def test_venue_for_ib_reads_the_ib_settings() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, IB_HOST="10.1.2.3", IB_PORT=7497, IB_CLIENT_ID=9, IB_ACCOUNT="DU42"
    )
    venue = venue_for("ib", settings)
    assert isinstance(venue, IbVenue) and venue.name == "ib"
    c = venue.config
    assert (c.host, c.port, c.client_id, c.account) == ("10.1.2.3", 7497, 9, "DU42")
    assert not venue.connected and venue.state.value == "disconnected"


def test_venues_sim_refuses_an_unknown_name_and_lists_the_known_ones() -> None:
    result = CliRunner().invoke(venues, ["sim", "nope", "--port", "0"])
    assert result.exit_code == 2
    assert "unknown simulator 'nope'" in result.output and "ib" in result.output
