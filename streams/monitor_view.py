"""The terminal view of a monitor snapshot (rich); pure: a snapshot dict in, a renderable out."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["render"]


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def render(snap: dict[str, Any], max_rows: int = 12) -> RenderableType:
    """Return the terminal view of one snapshot."""
    header = Text.assemble(
        ("tradeloop monitor  ", "bold"),
        f"{snap.get('bootstrap', '')}  prefix={snap.get('topic_prefix', '')}  ",
        f"from={snap.get('started_from', 'end')}  at {snap.get('generated_at', '')[:19]}Z",
    )
    topics = Table(title="topics", expand=True)
    for col in ("topic", "msgs", f"msg/s ({int(snap.get('rate_window_s', 60))}s)", "last record"):
        topics.add_column(col, justify="left" if col in ("topic", "last record") else "right")
    for short, t in snap["topics"].items():
        topics.add_row(
            short, str(t["messages"]), f"{t['rate_per_s']:.2f}", _fmt(t["last_record_at"])[:19]
        )

    lag = snap["lag"]
    lag_t = Table(title="consumer lag", expand=True)
    for col in ("group", "topic", "part", "committed", "end", "lag"):
        lag_t.add_column(
            col, justify="right" if col in ("part", "committed", "end", "lag") else "left"
        )
    rows = sorted(lag["partitions"], key=lambda r: -r["lag"])[:max_rows]
    for r in rows:
        style = "red" if r["lag"] > 1000 else ("yellow" if r["lag"] > 0 else "")
        lag_t.add_row(
            r["group"],
            r["topic"],
            str(r["partition"]),
            str(r["committed"]),
            str(r["end"]),
            Text(str(r["lag"]), style=style),
        )
    if not rows:
        lag_t.add_row("(no committed offsets on these topics)", "", "", "", "", "")
    lag_notes = [Text(n, style="yellow") for n in lag.get("notes", [])]

    pnl = snap["pnl"]
    pnl_t = Table(title=f"today {pnl['day']} (real trades)", expand=True)
    for col in ("symbol", "strategy", "trades", "win rate", "avg R", "PnL $"):
        pnl_t.add_column(col, justify="left" if col in ("symbol", "strategy") else "right")
    for r in pnl["by_symbol_strategy"]:
        pnl_t.add_row(
            r["symbol"],
            r["strategy"],
            str(r["trades"]),
            _fmt(r["win_rate"], ".1%"),
            _fmt(r["avg_r"], ".2f"),
            Text(f"{r['pnl_usd']:,.2f}", style="green" if r["pnl_usd"] >= 0 else "red"),
        )
    tot = pnl["total"]
    pnl_t.add_row(
        "all",
        "",
        str(tot["trades"]),
        _fmt(tot["win_rate"], ".1%"),
        _fmt(tot["avg_r"], ".2f"),
        f"{tot['pnl_usd']:,.2f}",
        style="bold",
    )

    orders = snap.get("orders", {"working": [], "latest_fills": []})
    work_t = Table(title=f"working orders: {len(orders['working'])}", expand=True)
    for col in ("symbol", "role", "side", "qty", "filled", "type", "price", "order", "since"):
        work_t.add_column(col, justify="right" if col in ("qty", "filled", "price") else "left")
    for w in orders["working"][:max_rows]:
        work_t.add_row(
            w["symbol"],
            w["role"],
            w["side"],
            str(w["quantity"]),
            str(w["filled"]),
            w["type"],
            _fmt(w["price"], ".2f"),
            w["client_order_id"],
            _fmt(w["since"])[11:19],
        )
    fills_t = Table(title="latest fills", expand=True)
    for col in ("at", "symbol", "role", "side", "qty", "cum", "price", "order"):
        fills_t.add_column(col, justify="right" if col in ("qty", "cum", "price") else "left")
    for f in orders["latest_fills"][:5]:
        fills_t.add_row(
            _fmt(f["at"])[11:19],
            f["symbol"],
            f["role"],
            f["side"],
            str(f["quantity"]),
            str(f["cumulative_quantity"]),
            f"{f['price']:.2f}",
            f["client_order_id"],
        )

    latest = snap["models"]["latest"]
    trader = snap["trader"]
    model_lines = [
        Text(
            f"published: {latest['release']} seq={latest['sequence']} ({latest['kind']}, "
            f"gate={latest['gate']}) age {_age(latest['age_s'])}  "
            + " ".join(f"{k}={v}" for k, v in latest["artifacts"].items())
        )
        if latest
        else Text("published: no release seen on the models topic")
    ]
    if trader.get("reachable"):
        model_lines.append(
            Text(
                f"serving:   {_fmt(trader.get('release'))} age {_age(trader.get('model_age_s'))}"
                f"  swaps={_fmt(trader.get('swaps_total'))}"
                f"  last swap: {_fmt(trader.get('last_swap'))}"
                f"  last rejection: {_fmt(trader.get('last_rejection'))}"
            )
        )
    else:
        model_lines.append(
            Text(f"serving:   {trader.get('note') or 'trader not reachable'}", "yellow")
        )

    dead = snap["dead_letters"]
    dlq_t = Table(title=f"dead letters: {dead['count']}", expand=True)
    for col in ("at", "source", "error", "reason"):
        dlq_t.add_column(col, overflow="fold")
    for d in dead["latest"][:5]:
        dlq_t.add_row(
            _fmt(d["at"])[11:19],
            f"{d['source_topic']}[{d['partition']}]@{d['offset']}",
            d["error_type"],
            d["reason"][:160],
        )
    drift = snap["drift"]
    drift_t = Table(title=f"drift alerts: {drift['count']}", expand=True)
    for col in ("at", "symbol", "strategy", "metric", "detector", "value"):
        drift_t.add_column(col)
    for d in drift["latest"][:5]:
        drift_t.add_row(
            _fmt(d["at"])[11:19],
            d["symbol"],
            d["strategy"],
            d["metric"],
            d["detector"],
            f"{d['value']:.4g}",
        )
    extra = [Text(n, style="yellow") for n in snap.get("notes", [])]
    if snap.get("decode_errors"):
        extra.append(Text(f"undecodable records: {snap['decode_errors']}", style="red"))
    return Group(
        header,
        topics,
        lag_t,
        *lag_notes,
        pnl_t,
        work_t,
        fills_t,
        Panel(Group(*model_lines), title="models"),
        dlq_t,
        drift_t,
        *extra,
    )
