"""The simulator's R|Protocol wire: framed protobuf over TLS, pinned to answers recorded from Rithmic.

A raw websocket client (the `websockets` library async_rithmic uses) talks to the
gateway simulator; the recorded answers are async_rithmic's own fixtures
(`recorded/`).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.trader.venues.rithmic.driver import INSTRUMENTS
from trader.venues.sims.rithmic import RithmicSimulator
from trader.venues.sims.rithmic_wire import decode, encode, message

RECORDED = Path(__file__).with_name("recorded")
#: async_rithmic's tests/test_base.py: a ResponseHeartbeat as Rithmic sent it
HEARTBEAT = (
    b"\x00\x00\x00\x17\x98\xb6K\x13\xa0\xa5I\xa5\xa0\xeb\xa8\x06\xa8\xa5I\x8c\xd9.\xf2\xe9@\x010"
)


def _fields(msg: Any) -> set[str]:
    return {f.name for f, _ in msg.ListFields()}


async def _ask(ws: ClientConnection, template_id: int, **fields: Any) -> Any:
    await ws.send(encode(message(template_id, **fields)))
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes)
    return decode(frame)


def test_system_info_login_heartbeat_and_front_month_answer_as_rithmic_does() -> None:
    async def go() -> None:
        sim = RithmicSimulator(INSTRUMENTS, system="Rithmic Paper Trading")
        await sim.start()
        tls = ssl.create_default_context(cafile=str(sim.ca_file))
        try:
            async with connect(sim.url, ssl=tls) as ws:
                info = await _ask(ws, 16, user_msg=[])
                recorded = decode((RECORDED / "system_info.bin").read_bytes())
                assert _fields(info) == _fields(recorded)
                assert "Rithmic Paper Trading" in info.system_name
                assert len(info.has_aggregated_quotes) == len(info.system_name)
            async with connect(sim.url, ssl=tls) as ws:
                early = await _ask(ws, 113, user_msg=["early"], symbol="NQ", exchange="CME")
                assert early.template_id == 75 and early.rp_code[0] == "3"
                refused = await _ask(
                    ws, 10, user_msg=["x"], user=sim.user, password="wrong", system_name=sim.system,
                    infra_type=1,
                )  # fmt: skip
                assert refused.template_id == 11 and list(refused.rp_code) == [
                    "13",
                    "permission denied",
                ]
                login = await _ask(
                    ws, 10, user_msg=["in"], user=sim.user, password=sim.password,
                    system_name=sim.system, infra_type=1, template_version="3.9",
                )  # fmt: skip
                assert list(login.rp_code) == ["0"] and list(login.user_msg) == ["in"]
                assert login.heartbeat_interval > 0 and login.fcm_id and login.ib_id
                beat = await _ask(ws, 18)
                assert _fields(beat) == _fields(decode(HEARTBEAT))
                front = await _ask(ws, 113, user_msg=["NQ"], symbol="NQ", exchange="CME")
                recorded = decode((RECORDED / "front_month_contract_NQ.bin").read_bytes())
                assert _fields(front) == _fields(recorded)
                assert front.trading_symbol == sim.contracts["NQ"] and front.is_front_month_symbol
                # a broken frame is refused with a Reject; the session goes on
                await ws.send(b"\x00\x00\x00\x05garbage")
                bad = decode(await asyncio.wait_for(ws.recv(), 5))
                assert bad.template_id == 75 and bad.rp_code[0] == "3"
                assert (await _ask(ws, 18)).template_id == 19
                none = await _ask(ws, 113, user_msg=["ZZ"], symbol="ZZ", exchange="CME")
                assert none.rp_code[0] == "7"  # Rithmic's "no data"
        finally:
            await sim.stop()
            sim.close()

    asyncio.run(go())
