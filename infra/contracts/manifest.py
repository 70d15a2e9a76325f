"""The model manifest: a signed release, its artifacts and the gate's decision."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.contracts.base import Event

__all__ = ["Artifact", "FamilyDecision", "GateResult", "ModelManifest", "Signature"]


class Artifact(BaseModel):
    """One ONNX file of a release."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    family: str
    version: str
    uri: str
    s3_version_id: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    probe_input: tuple[float, ...] = ()
    probe_output: tuple[float, ...] = ()


class FamilyDecision(BaseModel):
    """What the gate did with one model family and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: release: the challenger serves; champion: the previous model keeps serving;
    #: rules: no model of the family serves (the trader's rule fallback decides).
    decision: Literal["release", "champion", "rules"]
    reason: str = ""


class GateResult(BaseModel):
    """The champion/challenger decision recorded in a manifest.

    Fields after `challenger_metrics` came later: manifests without them still decode.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    decision: Literal["release", "refuse", "first", "rollback"]
    reasons: tuple[str, ...] = ()
    champion_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    challenger_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: The trivial baseline of each family on the same holdout (rules, mean, fixed size).
    baseline_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    families: dict[str, FamilyDecision] = Field(default_factory=dict)
    #: The significance test of the holdout's per-decision sized R (release vs champion).
    test: str = ""
    p_value: float | None = Field(default=None, ge=0.0, le=1.0)
    confidence: float | None = Field(default=None, gt=0.0, lt=1.0)


class Signature(BaseModel):
    """A signature over the canonical manifest body."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    alg: Literal["hmac-sha256", "ed25519"]
    key_id: str
    value: str


class ModelManifest(Event):
    """A signed model release; `signatures` cover the canonical JSON of everything else."""

    SCHEMA_NAME: ClassVar[str] = "model_manifest"
    model_set: str = "default"
    release: str
    sequence: int = Field(ge=1)
    kind: Literal["release", "rollback"] = "release"
    rollback_of: str | None = None
    artifacts: tuple[Artifact, ...]
    feature_names: tuple[str, ...] = ()
    train_window_start: datetime | None = None
    train_window_end: datetime | None = None
    gate: GateResult | None = None
    #: The training hyperparameters per family (a tuned profile's values included).
    hyperparameters: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: The link to the model set's previous manifest (None on its first one): its
    #: sequence and the sha256 of its published bytes.
    previous_sequence: int | None = Field(default=None, ge=1)
    previous_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_id: str = ""
    signatures: tuple[Signature, ...] = ()

    def artifact(self, family: str) -> Artifact | None:
        """Return the artifact of a model family, if the release has one."""
        return next((a for a in self.artifacts if a.family == family), None)
