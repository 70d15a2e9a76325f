"""The RL position sizer: a gymnasium environment over time-ordered signals, PPO, ONNX.

Environment: an episode walks `episode_len` consecutive signals (time order, all
symbols) from a random start. The observation is the signal's `sizer_vector`
(standardised with the training window's mean and std); the action in [-1, 1] maps
affinely to a size multiplier in [SIZE_MIN, SIZE_MAX]; the reward is

    size x R  -  dd_penalty x (increase of the drawdown of the sized R curve)
              -  size_penalty x size^2

so the policy earns R, pays for deepening drawdowns and for leverage it does not
need. The exported graph is standardise -> policy MLP -> deterministic action ->
clip to [-1, 1] -> affine to [SIZE_MIN, SIZE_MAX]: the bound lives in the graph.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from features.vectors import SIZE_MAX, SIZE_MIN, SIZER_FEATURE_NAMES
from training.config import DataError, TrainConfig

__all__ = ["SizerEnv", "SizerModel", "action_to_size", "export_sizer", "train_sizer"]

_HALF_SPAN = (SIZE_MAX - SIZE_MIN) / 2.0


def action_to_size(action: np.ndarray) -> np.ndarray:
    """Map actions in [-1, 1] (clipped) to size multipliers in [SIZE_MIN, SIZE_MAX]."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return SIZE_MIN + (a + 1.0) * _HALF_SPAN


class SizerEnv(gym.Env[np.ndarray, np.ndarray]):
    """Walk time-ordered (observation, R) pairs; reward sized R minus risk penalties."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        obs: np.ndarray,
        r: np.ndarray,
        episode_len: int,
        dd_penalty: float,
        size_penalty: float,
    ) -> None:
        super().__init__()
        if len(obs) < 2 or len(obs) != len(r):
            raise DataError(f"sizer: need >= 2 aligned observations and R values, got {len(obs)}")
        self.obs = np.ascontiguousarray(obs, dtype=np.float32)
        self.r = np.asarray(r, dtype=np.float64)
        self.episode_len = max(1, min(episode_len, len(obs) - 1))
        self.dd_penalty = dd_penalty
        self.size_penalty = size_penalty
        n = self.obs.shape[1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._i = 0
        self._end = 0
        self._equity = 0.0
        self._peak = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = int(self.np_random.integers(0, len(self.obs) - self.episode_len + 1))
        self._i, self._end = start, start + self.episode_len
        self._equity = self._peak = 0.0
        return self.obs[self._i], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        size = float(action_to_size(np.asarray(action).reshape(-1)[:1])[0])
        pnl = size * float(self.r[self._i])
        dd_before = self._peak - self._equity
        self._equity += pnl
        self._peak = max(self._peak, self._equity)
        dd_after = self._peak - self._equity
        reward = (
            pnl - self.dd_penalty * max(0.0, dd_after - dd_before) - self.size_penalty * size**2
        )
        self._i += 1
        done = self._i >= self._end
        obs = self.obs[min(self._i, len(self.obs) - 1)]
        return obs, float(reward), done, False, {"size": size}


class _Exportable(nn.Module):
    """Standardise, run the policy MLP, take the mean action, clip and map to a size."""

    def __init__(
        self, mean: np.ndarray, std: np.ndarray, policy_net: nn.Module, action_net: nn.Module
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.policy_net = policy_net
        self.action_net = action_net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = (obs - self.get_buffer("mean")) * self.get_buffer("scale")
        a = torch.clamp(self.action_net(self.policy_net(z)), -1.0, 1.0)
        return a * _HALF_SPAN + (SIZE_MIN + _HALF_SPAN)


@dataclass
class SizerModel:
    """A trained PPO policy with the standardisation of its training window."""

    ppo: Any
    mean: np.ndarray
    std: np.ndarray

    def normalise(self, obs: np.ndarray) -> np.ndarray:
        """Return standardised observations (float32)."""
        return ((np.asarray(obs, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def predict_size(self, obs: np.ndarray) -> np.ndarray:
        """Return the deterministic size multiplier per row (the native reference)."""
        action, _ = self.ppo.predict(self.normalise(obs), deterministic=True)
        return action_to_size(np.asarray(action).reshape(-1)).reshape(-1, 1)

    def module(self) -> nn.Module:
        """Return the exportable torch module (standardise -> policy -> bounded size)."""
        policy = self.ppo.policy
        return _Exportable(
            self.mean, self.std, policy.mlp_extractor.policy_net, policy.action_net
        ).eval()


def train_sizer(obs: np.ndarray, r: np.ndarray, cfg: TrainConfig) -> SizerModel:
    """Train the PPO sizer on time-ordered observations and their R-multiples."""
    from stable_baselines3 import PPO

    obs = np.asarray(obs, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != len(SIZER_FEATURE_NAMES):
        raise DataError(
            f"sizer: observations must be [N, {len(SIZER_FEATURE_NAMES)}], got {obs.shape}"
        )
    if not np.all(np.isfinite(obs)) or not np.all(np.isfinite(r)):
        raise DataError("sizer: observations or R values contain NaN or infinity")
    mean = obs.mean(axis=0).astype(np.float32)
    std = obs.std(axis=0).astype(np.float32)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    env = SizerEnv(
        (obs - mean) / std, r, cfg.sizer_episode_len, cfg.sizer_dd_penalty, cfg.sizer_size_penalty
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2x32 MLP is slower with intra-op threads
    try:
        ppo = PPO(
            "MlpPolicy",
            env,
            n_steps=cfg.sizer_n_steps,
            batch_size=cfg.sizer_batch_size,
            n_epochs=cfg.sizer_epochs,
            learning_rate=3e-4,
            gamma=0.99,
            ent_coef=0.0,
            policy_kwargs={
                "net_arch": {"pi": list(cfg.sizer_hidden), "vf": list(cfg.sizer_hidden)},
                "activation_fn": nn.Tanh,
            },
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
        ppo.learn(total_timesteps=cfg.sizer_timesteps)
    finally:
        torch.set_num_threads(threads)
    return SizerModel(ppo, mean, std)


def export_sizer(model: SizerModel) -> bytes:
    """Export the sizer policy to ONNX: `obs` [N, 11] -> `size` [N, 1] in [0.1, 2.0]."""
    import warnings

    module = model.module()
    buf = io.BytesIO()
    dummy = torch.zeros(1, len(SIZER_FEATURE_NAMES), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            buf,  # type: ignore[arg-type]
            input_names=["obs"],
            output_names=["size"],
            dynamic_axes={"obs": {0: "n"}, "size": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()
