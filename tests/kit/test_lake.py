"""The synthetic lake's stamped stream features equal what the streams worker folds."""

from __future__ import annotations

import numpy as np
import pytest

from features.stream import OUTCOME_FEATURES, StreamFeatureState
from infra.contracts import FeatureUpdate, TradeOutcome
from tests.kit.lake import synthetic_frames


@pytest.mark.parametrize("seed", [3, 8])
def test_strategy_stats_equal_the_stream_fold_of_the_same_outcomes(seed: int) -> None:
    frames = synthetic_frames(2500, seed=seed, symbols=("ES", "NQ"))
    outcomes = frames["outcomes"].sort_values(["exit_ts", "signal_id"], kind="stable")
    stamped = frames["features"]
    assert len(stamped) == len(outcomes) and outcomes["counterfactual"].any()
    # every (symbol, strategy) runs longer than the rolling window, so it rolls over
    assert outcomes.groupby(["symbol", "strategy"]).size().min() > 50

    state = StreamFeatureState(detect_drift=False)
    folded = []
    for rec in outcomes.to_dict("records"):
        at = rec["exit_ts"].to_pydatetime()
        event = TradeOutcome(
            event_id=rec["event_id"],
            ts_event=at,
            ts_init=at,
            **{
                k: (rec[k].to_pydatetime() if k.endswith("_ts") else rec[k])
                for k in (
                    "signal_id", "symbol", "strategy", "side", "entry_ts", "entry_price",
                    "exit_ts", "exit_price", "quantity", "pnl_usd", "r_multiple", "mae_r",
                    "mfe_r", "commission_usd", "exit_reason", "counterfactual",
                )
            },
        )  # fmt: skip
        (update,) = state.learn(event)
        assert isinstance(update, FeatureUpdate)
        folded.append((update.symbol, update.strategy, update.ts_event, update.values))

    assert list(stamped["symbol"]) == [f[0] for f in folded]
    assert list(stamped["strategy"]) == [f[1] for f in folded]
    assert [t.to_pydatetime() for t in stamped["event_timestamp"]] == [f[2] for f in folded]
    for name in OUTCOME_FEATURES:
        want = np.array([f[3][name] for f in folded])
        np.testing.assert_allclose(stamped[name].to_numpy(), want, rtol=0, atol=1e-9, err_msg=name)
