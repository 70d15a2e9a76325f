"""The ground floor: event contracts, topic specs and vocabularies. Imports nothing of ours
but itself; every other package imports these names from here."""

from infra.contracts.events import *  # noqa: F403
from infra.contracts.events import __all__ as _events_all
from infra.contracts.keys import *  # noqa: F403
from infra.contracts.keys import __all__ as _keys_all
from infra.contracts.topics import *  # noqa: F403
from infra.contracts.topics import __all__ as _topics_all
from infra.contracts.vocab import *  # noqa: F403
from infra.contracts.vocab import __all__ as _vocab_all

__all__ = sorted(set(_events_all) | set(_keys_all) | set(_topics_all) | set(_vocab_all))
