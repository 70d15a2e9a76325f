"""Start-up models from MODELS_DIR / *_ONNX are served only under a signed manifest (`unsigned_models`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from infra.settings import Settings
from infra.signing import Keyring, generate_ed25519
from tests.hotswap_support import build_blobs, release_bytes
from trader.delivery.models import ModelSet
from trader.delivery.startup import UnsignedModelsError, release_trust


def _models_dir(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    blobs = build_blobs(3)
    directory = tmp_path / "models"
    directory.mkdir()
    for family, blob in blobs.items():
        (directory / f"{family}.onnx").write_bytes(blob)
    return directory, blobs


def _keys(make_settings: Callable[..., Settings]) -> tuple[Settings, str]:
    private, public = generate_ed25519()
    trainer = make_settings(kafka=False, MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}")
    return trainer, f"ed1:{public}"


def test_unsigned_start_up_models_are_refused(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Old: any ONNX file in MODELS_DIR / META_ONNX was served at start-up."""
    directory, _blobs = _models_dir(tmp_path)
    _trainer, public = _keys(make_settings)
    trader = make_settings(
        kafka=False, MODELS_DIR=str(directory), MANIFEST_ED25519_PUBLIC_KEYS=public
    )
    with pytest.raises(UnsignedModelsError) as err:
        ModelSet.from_settings(trader)
    assert str(err.value).startswith("unsigned_models: no signed manifest")
    assert "ALLOW_UNSIGNED_MODELS=1" in str(err.value)
    paths = make_settings(
        kafka=False, META_ONNX=str(directory / "meta.onnx"), MANIFEST_ED25519_PUBLIC_KEYS=public
    )
    with pytest.raises(UnsignedModelsError, match="need MODELS_MANIFEST"):
        ModelSet.from_settings(paths)
    # the operator's explicit choice, shown as weaker on /healthz
    allowed = make_settings(
        kafka=False,
        MODELS_DIR=str(directory),
        ALLOW_UNSIGNED_MODELS="1",
        MANIFEST_ED25519_PUBLIC_KEYS=public,
    )
    assert ModelSet.from_settings(allowed).families == ("meta", "exec", "sizer")
    trust = release_trust(allowed)
    assert trust["unsigned_models_allowed"] is True and trust["weaker"] == ["ALLOW_UNSIGNED_MODELS"]
    assert release_trust(trader)["weaker"] == [] and release_trust(trader)["accepts"] == "ed25519"
    # a backtest places no orders: it loads the files as they are
    assert ModelSet.from_settings(trader, require_signed=False).families == (
        "meta",
        "exec",
        "sizer",
    )


def test_a_signed_manifest_covering_the_files_lets_them_serve(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    directory, blobs = _models_dir(tmp_path)
    trainer, public = _keys(make_settings)
    raw = release_bytes(trainer, 7, blobs=blobs, keyring=Keyring.from_settings(trainer))
    (directory / "manifest.json").write_bytes(raw)
    trader = make_settings(
        kafka=False, MODELS_DIR=str(directory), MANIFEST_ED25519_PUBLIC_KEYS=public
    )
    models = ModelSet.from_settings(trader)
    assert models.release == "r7" and models.versions == dict.fromkeys(
        ("exec", "meta", "sizer"), "v7"
    )
    # RL_ONNX alone, with MODELS_MANIFEST naming the manifest
    sizer_only = make_settings(
        kafka=False,
        RL_ONNX=str(directory / "sizer.onnx"),
        MODELS_MANIFEST=str(directory / "manifest.json"),
        MANIFEST_ED25519_PUBLIC_KEYS=public,
    )
    assert ModelSet.from_settings(sizer_only).families == ("sizer",)
    # a file swapped on disk is not the one the manifest lists
    evil = bytearray(blobs["exec"])
    evil[-3] ^= 0x01
    (directory / "exec.onnx").write_bytes(bytes(evil))
    with pytest.raises(UnsignedModelsError) as err:
        ModelSet.from_settings(trader)
    assert "exec: sha256" in str(err.value)
    assert hashlib.sha256(bytes(evil)).hexdigest()[:16] in str(err.value)


def test_a_manifest_this_trader_does_not_trust_covers_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    directory, blobs = _models_dir(tmp_path)
    trainer, public = _keys(make_settings)
    # HMAC-signed (the seed's key): a public-key trader calls it a downgrade
    hmac_only = Keyring(Keyring.from_settings(trainer).hmac_keys, trainer.manifest_key_id)
    (directory / "manifest.json").write_bytes(
        release_bytes(trainer, 3, blobs=blobs, keyring=hmac_only)
    )
    trader = make_settings(
        kafka=False, MODELS_DIR=str(directory), MANIFEST_ED25519_PUBLIC_KEYS=public
    )
    with pytest.raises(UnsignedModelsError, match="downgrade"):
        ModelSet.from_settings(trader)
    # a tampered manifest body fails its signature
    raw = release_bytes(trainer, 4, blobs=blobs, keyring=Keyring.from_settings(trainer))
    obj = orjson.loads(raw)
    obj["release"] = "r4-better"
    (directory / "manifest.json").write_bytes(orjson.dumps(obj))
    with pytest.raises(UnsignedModelsError, match="bad_signature"):
        ModelSet.from_settings(trader)


def _healthz_trust(settings: Settings) -> dict[str, object]:
    import asyncio

    import httpx

    from trader.core.engine import Engine, EngineConfig
    from trader.delivery.models import ModelHolder
    from trader.feeds.sim import SimFeed
    from trader.io.api import create_app
    from trader.runtime import Runtime

    holder = ModelHolder()
    engine = Engine(settings, EngineConfig(run_id="trust", source="sim"), holder, sinks=[])
    runtime = Runtime(settings, engine, SimFeed(("ES",), seed=1, days=1), holder)

    async def get() -> dict[str, object]:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://trader") as client:
            return dict((await client.get("/healthz")).json()["models"]["trust"])

    return asyncio.run(get())


def test_healthz_flags_the_weaker_modes(make_settings: Callable[..., Settings]) -> None:
    """Old: /healthz said nothing about what a trader accepts."""
    _trainer, public = _keys(make_settings)
    strict = _healthz_trust(
        make_settings(kafka=False, MANIFEST_ED25519_PUBLIC_KEYS=public, ALLOW_HMAC_RELEASES="0")
    )
    assert strict == {
        "accepts": "ed25519",
        "ed25519_key_ids": ["ed1"],
        "hmac_releases_allowed": False,
        "unsigned_models_allowed": False,
        "weaker": [],
    }
    weak = _healthz_trust(
        make_settings(kafka=False, ALLOW_HMAC_RELEASES="1", ALLOW_UNSIGNED_MODELS="1")
    )
    assert weak["accepts"] == "hmac"
    assert weak["weaker"] == ["ALLOW_HMAC_RELEASES", "ALLOW_UNSIGNED_MODELS"]
