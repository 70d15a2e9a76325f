"""The walk `tradeloop evaluate` drives: arms on the same bars, releases verified as a hot swap."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from infra.contracts.keys import manifest_key
from infra.objectstore import object_store
from infra.settings import Settings
from tests.conftest import SettingsFactory
from tests.hotswap_support import release_bytes
from trader.walk import _parser, build, serve


def _serve(walker: Any, *commands: dict[str, Any] | str) -> list[dict[str, Any]]:
    lines = "".join((c if isinstance(c, str) else json.dumps(c)) + "\n" for c in commands)
    replies = io.StringIO()
    serve(walker, io.StringIO(lines), replies)
    return [json.loads(line) for line in replies.getvalue().splitlines()]


def _walker(settings: Settings, out: Path) -> Any:
    args = _parser().parse_args(
        ["--feed", "sim", "--symbols", "ES", "--days", "1", "--arms", "models,rules",
         "--lake-arms", "models", "--out", str(out), "--run-id", "walk-test",
         "--store-dir", str(settings.store_root)]
    )  # fmt: skip
    return build(args, settings)


def test_arms_walk_the_same_bars_and_only_a_verified_release_is_swapped_in(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(kafka=False)
    store = object_store(settings)
    good = release_bytes(settings, 1)
    store.put(manifest_key(1), good)
    store.put(manifest_key(2), good.replace(b'"r1"', b'"r9"'))  # signed body altered
    walker = _walker(settings, tmp_path / "arms")
    first = walker.first_ts_s()
    assert first is not None
    replies = _serve(
        walker,
        {"op": "run", "until_s": first + 3 * 3600},
        {"op": "swap", "arms": ["models"], "manifest_key": manifest_key(1)},
        {"op": "swap", "arms": ["models"], "manifest_key": manifest_key(1)},
        {"op": "swap", "arms": ["models"], "manifest_key": manifest_key(2)},
        {"op": "swap", "arms": ["nope"], "manifest_key": manifest_key(1)},
        {"op": "swap", "arms": ["models"], "manifest_key": manifest_key(7)},
        "not json",
        {"op": "fly"},
        {"op": "run", "until_s": None},
        {"op": "finish"},
    )
    ran, swapped, stale, altered, unknown, missing, garbled, fly, rest, finish = replies
    assert ran["ok"] and ran["bars"] == 180 and not ran["done"]
    assert ran["next_ts_s"] == first + 3 * 3600
    assert swapped == {"ok": True, "release": "r1", "sequence": 1}
    assert not stale["ok"] and "stale_sequence" in stale["error"]
    assert not altered["ok"] and "bad_signature" in altered["error"]
    assert not unknown["ok"] and "unknown arms ['nope']" in unknown["error"]
    assert not missing["ok"] and "no manifest" in missing["error"]
    assert not garbled["ok"] and "bad command" in garbled["error"]
    assert not fly["ok"] and "unknown op 'fly'" in fly["error"]
    assert rest["ok"] and rest["done"] and rest["processed"] == 1380
    arms = finish["arms"]
    assert arms["models"]["bars"] == arms["rules"]["bars"] == 1380
    assert arms["models"]["release"] == "r1" and arms["rules"]["release"] == ""
    assert len(finish["hours"]) == 24  # 23:01 to 22:00 UTC: the 22:00 close opens hour 22
    # the arm with a lake wrote its events there; every arm wrote its trades
    assert (tmp_path / "arms" / "models" / "lake" / "signals").is_dir()
    assert not (tmp_path / "arms" / "rules" / "lake").exists()
    for arm in ("models", "rules"):
        if arms[arm]["trades"]:
            assert list((tmp_path / "arms" / arm / "trades").glob("part-*.parquet"))
