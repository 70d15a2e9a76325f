"""Render the IAM and bucket policies of this directory for one bucket and account.

    python infra/deploy/iam/render.py --bucket my-bucket --account 123456789012 --out DIR

replaces `${S3_BUCKET}` and `${AWS_ACCOUNT_ID}` in every `*.json` here, checks the
result is valid JSON with no placeholder left and writes it to DIR (one file per
policy). Values default to the environment (`S3_BUCKET`, `AWS_ACCOUNT_ID`). The
compose stack runs it before MinIO's init job attaches the policies to its users.
Standard library only: it runs in any Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def render(text: str, values: dict[str, str]) -> str:
    """Return `text` with every `${NAME}` replaced; raise ValueError if one has no value."""
    missing = sorted({m for m in PLACEHOLDER.findall(text) if not values.get(m)})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}")
    out = PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    json.loads(out)
    return out


def render_dir(values: dict[str, str], out_dir: Path, src: Path = HERE) -> list[Path]:
    """Render every policy of `src` into `out_dir`; return the written paths."""
    bucket = values.get("S3_BUCKET", "")
    if not BUCKET_NAME.match(bucket):
        raise ValueError(f"S3_BUCKET {bucket!r} is not a valid bucket name")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src.glob("*.json")):
        text = path.read_text()
        if "${AWS_ACCOUNT_ID}" in text and not values.get("AWS_ACCOUNT_ID"):
            continue  # the bucket policy names IAM roles: AWS only, skipped without an account
        target = out_dir / path.name
        target.write_text(render(text, values))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Render the policies; exit 2 on a missing or bad value."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", default=os.environ.get("S3_BUCKET", ""))
    ap.add_argument("--account", default=os.environ.get("AWS_ACCOUNT_ID", ""))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        paths = render_dir({"S3_BUCKET": args.bucket, "AWS_ACCOUNT_ID": args.account}, args.out)
    except ValueError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
