"""Model serving in the trader: which models to load at start, the RL sizer, the canary."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from infra.settings.base import SettingsContext


class ServingSettings(SettingsContext):
    """The models the trader serves and how a challenger release is tried."""

    title: ClassVar[str] = "Model serving"

    rl_enabled: bool = Field(
        default=True,
        validation_alias="RL_ENABLED",
        description="Use the RL position sizer (seed name); off: multiplier 1.0.",
    )
    rl_onnx: str = Field(
        default="",
        validation_alias="RL_ONNX",
        description="Path of an RL sizer ONNX file to serve at start (seed name).",
    )
    meta_onnx: str = Field(
        default="",
        validation_alias="META_ONNX",
        description="Path of a meta classifier ONNX file to serve at start.",
    )
    exec_onnx: str = Field(
        default="",
        validation_alias="EXEC_ONNX",
        description="Path of an execution-quality ONNX file to serve at start.",
    )
    models_dir: str = Field(
        default="",
        validation_alias="MODELS_DIR",
        description="Directory of ONNX files to serve at start (`{family}.onnx` or `{family}/{version}/`).",
    )
    canary_mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        validation_alias="CANARY_MODE",
        description="`off`, `shadow` (score beside the champion) or `canary` (challenger decides a share).",
    )
    canary_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        validation_alias="CANARY_SHARE",
        description="Share of decisions the challenger takes in canary mode.",
    )
    canary_min_decisions: int = Field(
        default=50,
        ge=1,
        validation_alias="CANARY_MIN_DECISIONS",
        description="Resolved challenger decisions before a canary verdict.",
    )
    canary_window_sec: float = Field(
        default=1800.0,
        gt=0,
        validation_alias="CANARY_WINDOW_SEC",
        description="Longest canary trial before a verdict.",
    )
