"""`tradeloop events schema`: write the JSON Schema of every contract."""

from __future__ import annotations

import json
from pathlib import Path

import click

from infra.contracts import TOPICS, json_schemas


@click.group()
def events() -> None:
    """Event contracts."""


@events.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs/events"),
    show_default=True,
    help="Directory to write <contract>.schema.json files into.",
)
def schema(out_dir: Path) -> None:
    """Write JSON Schema for every contract, and an index of topics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for name, body in schemas.items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {path}")
    index = {
        spec.name: {
            "contract": spec.contract.SCHEMA_NAME,
            "version": spec.contract.SCHEMA_VERSION,
            "contracts": {c.SCHEMA_NAME: c.SCHEMA_VERSION for c in spec.contracts},
            "key": spec.key,
            "cleanup_policy": "compact" if spec.compacted else "delete",
        }
        for spec in TOPICS.values()
    }
    (out_dir / "topics.json").write_text(json.dumps(index, indent=2) + "\n")
    click.echo(f"wrote {out_dir / 'topics.json'}")
