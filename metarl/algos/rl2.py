"""RL² (Duan et al. 2016): adaptation by a recurrent policy's memory instead of gradient steps.

A *trial* is `episodes_per_trial` (default 2) consecutive episodes of one task. `RL2Env` turns any metarl task
family into a Gymnasium env whose episodes are trials: the observation is the task env's observation
(flattened) followed by the previous action (flattened: one-hot for a Discrete space), the previous
reward and a done flag that is 1 when the previous step ended an inner episode. Only the end of the
trial is an episode end for stable-baselines3 (`terminated=True`), so sb3-contrib's RecurrentPPO
carries its LSTM state across the episodes of a trial and resets it between trials; inner episode ends
are seen only through the done flag. Each inner episode lasts at most `config.horizon` (or the
family's `max_episode_steps`) steps.

`RL2` trains sb3-contrib's `RecurrentPPO` (its LSTM policy, `lstm_hidden_size` units, `net_arch` layers
after the LSTM, `ppo_epochs` passes per rollout) on `meta_batch_size` such envs (one trial per env and
meta-iteration, on the CPU). The MLP policy the trainer builds is kept to satisfy `MetaLearner` but
never acts. Limitations: single process only (no torchrun sharding); a checkpoint holds the recurrent
policy's and its optimizer's state but not the envs' trials in progress or their LSTM states, so a
resumed run is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.algos.base import MetaLearner
from metarl.algos.held_out import AdaptationResult
from metarl.config import Config
from metarl.hyperparameters import MAX_WIDTH, POSITIVE, POSITIVE_INT, POSITIVE_INTS, Hyperparameter, positive_int
from metarl.metrics import NON_FINITE, iteration_metrics
from metarl.regularizers.base import Regularizer
from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from stable_baselines3.common.callbacks import BaseCallback

#: default episodes of the same task in one training trial (the `episodes_per_trial` key)
EPISODES_PER_TRIAL = 2
#: PPO minibatches per epoch: sb3-contrib steps the LSTM through each minibatch's sequences one time
#: step at a time, so an epoch costs about this many passes over the trial length
RL2_MINIBATCHES = 1
#: `info` key, at a trial's end, of the list of its inner episodes' returns
TRIAL_RETURNS = "rl2_episode_returns"


class RL2Env(gym.Env):
    """Trials of `episodes_per_trial` episodes of one task; a new task from `rng` at every reset.

    With `task` given, every trial is of that task (evaluation). Observation layout:
    `[obs (flattened) | previous action (flattened) | previous reward | previous step ended an episode]`,
    zeros for the last three at the start of a trial. A bounded Box action space is offered as [−1, 1]
    (the previous action is shown in that scale) and mapped onto the task's bounds.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        family: TaskDistribution,
        horizon: int,
        rng: np.random.Generator | None = None,
        episodes_per_trial: int = EPISODES_PER_TRIAL,
        task: dict[str, Any] | None = None,
    ) -> None:
        if episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be at least 1, got {episodes_per_trial}")
        self.family, self.horizon, self.episodes_per_trial = family, int(horizon), int(episodes_per_trial)
        self.fixed_task = task
        self.task_rng = rng if rng is not None else np.random.default_rng(0)
        self.task = task if task is not None else family.sample_tasks(1, self.task_rng)[0]
        self.env = family.make_env(self.task)
        self.inner_observation_space, self.inner_action_space = self.env.observation_space, self.env.action_space
        self.action_space = _normalized(self.inner_action_space)
        self.obs_dim = gym.spaces.flatdim(self.inner_observation_space)
        self.action_dim = gym.spaces.flatdim(self.action_space)
        size = self.obs_dim + self.action_dim + 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self._fresh = True  # the env built above has not started a trial yet
        self.episode, self.t, self.episode_return = 0, 0, 0.0
        self.returns: list[float] = []

    def set_task_rng(self, seed: int) -> None:
        """Draw the tasks of the following trials from a generator seeded with `seed`."""
        self.task_rng = np.random.default_rng(seed)

    def _observation(self, obs: Any, action: Any, reward: float, done: bool) -> np.ndarray:
        parts = [np.asarray(gym.spaces.flatten(self.inner_observation_space, obs), dtype=np.float32)]
        if action is None:
            parts.append(np.zeros(self.action_dim, dtype=np.float32))
        else:
            parts.append(np.asarray(gym.spaces.flatten(self.action_space, action), dtype=np.float32))
        parts.append(np.asarray([reward, float(done)], dtype=np.float32))
        return np.concatenate(parts)

    def _reset_inner(self) -> Any:
        obs, _ = self.env.reset(seed=int(self.np_random.integers(2**31 - 1)))
        self.t, self.episode_return = 0, 0.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self.fixed_task is None and not self._fresh:
            self.env.close()
            self.task = self.family.sample_tasks(1, self.task_rng)[0]
            self.env = self.family.make_env(self.task)
        self._fresh = False
        self.episode, self.returns = 0, []
        obs = self._reset_inner()
        return self._observation(obs, None, 0.0, False), {"task": self.task}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(self.action_space, gym.spaces.Discrete):
            action = int(np.asarray(action).reshape(-1)[0])
        elif isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(
                np.asarray(action, dtype=self.action_space.dtype), self.action_space.low, self.action_space.high
            ).reshape(self.action_space.shape)
        obs, reward, terminated, truncated, _ = self.env.step(self._to_task_action(action))
        reward = float(reward)
        self.t += 1
        self.episode_return += reward
        info: dict[str, Any] = {"task": self.task}
        episode_done = bool(terminated or truncated or self.t >= self.horizon)
        if not episode_done:
            return self._observation(obs, action, reward, False), reward, False, False, info
        self.returns.append(self.episode_return)
        self.episode += 1
        if self.episode >= self.episodes_per_trial:
            info[TRIAL_RETURNS] = list(self.returns)
            return self._observation(obs, action, reward, True), reward, True, False, info
        obs = self._reset_inner()  # the next episode of the same trial starts from the task's initial state
        return self._observation(obs, action, reward, True), reward, False, False, info

    def _to_task_action(self, action: Any) -> Any:
        """A normalized action in [−1, 1] mapped affinely onto the task env's bounds."""
        space = self.inner_action_space
        if self.action_space is space or not isinstance(space, gym.spaces.Box):  # only a Box is normalized
            return action
        low, high = space.low, space.high
        return (low + (action + 1.0) * 0.5 * (high - low)).astype(space.dtype)

    def close(self) -> None:
        self.env.close()


def _lstm_over_sequences(
    features: torch.Tensor,
    lstm_states: tuple[torch.Tensor, torch.Tensor],
    episode_starts: torch.Tensor,
    lstm: nn.LSTM,
) -> tuple[torch.Tensor, Any]:  # (output, (h, c)); sb3-contrib annotates the states as one tensor
    """sb3-contrib's `_process_sequence` with one LSTM call per batch of sequences.

    RecurrentPPO cuts its rollout into sequences at episode starts, so a start can only be a
    sequence's first step. sb3-contrib then steps the LSTM one time step at a time in Python for any
    batch holding a start, which made PPO's update 90 % of an RL² iteration. Resetting the initial
    state where the first step starts an episode and running the whole sequence at once computes the
    same thing. A batch with a start after its first step keeps sb3-contrib's loop.
    """
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    n_seq = lstm_states[0].shape[1]
    starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
    if starts[1:].any():
        return RecurrentActorCriticPolicy._process_sequence(features, lstm_states, episode_starts, lstm)
    keep = (1.0 - starts[0]).view(1, n_seq, 1)
    sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
    output, final_states = lstm(sequence, (keep * lstm_states[0], keep * lstm_states[1]))
    return torch.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), final_states


@functools.cache
def _recurrent_policy_class() -> type:
    """sb3-contrib's `MlpLstmPolicy`, its LSTMs run by `_lstm_over_sequences` (one class for every learner)."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    class SequenceLstmPolicy(RecurrentActorCriticPolicy):
        _process_sequence = staticmethod(_lstm_over_sequences)

    return SequenceLstmPolicy


def _normalized(space: gym.Space[Any]) -> gym.Space[Any]:
    """[−1, 1] in place of a bounded Box (what PPO's Gaussian policy expects); other spaces as they are."""
    if isinstance(space, gym.spaces.Box) and space.is_bounded("both"):
        return gym.spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)
    return space


@dataclass
class _Trials:
    """What `_trial_callback` records during `learn`: the per-episode returns of every trial finished,
    and the rollouts' duration."""

    returns: list[list[float]] = field(default_factory=list)
    sampling_s: float = 0.0


def _trial_callback(record: _Trials) -> BaseCallback:
    """A callback that records into `record`."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TrialReturns(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self._started = 0.0

        def _on_rollout_start(self) -> None:
            self._started = time.perf_counter()

        def _on_rollout_end(self) -> None:
            record.sampling_s += time.perf_counter() - self._started

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if TRIAL_RETURNS in info:
                    record.returns.append(info[TRIAL_RETURNS])
            return True

    return TrialReturns()


class RL2(MetaLearner):
    """RL² with sb3-contrib's RecurrentPPO; see the module docstring.

    One `step` is one RecurrentPPO rollout of `meta_batch_size × episodes_per_trial × horizon` env
    steps (`meta_batch_size` parallel trial envs) and its PPO update. `return/before_adaptation` and
    `return/after_adaptation` are the mean returns of the first and last episode of the trials that
    ended during the step.
    """

    inner_loss = None  # adapts through memory, not an inner gradient step
    outer_lr = Hyperparameter(1e-3, POSITIVE, "PPO's learning rate")
    episodes_per_trial = Hyperparameter(EPISODES_PER_TRIAL, POSITIVE_INT, "episodes of one task in a training trial")
    # the defaults are sb3-contrib's, so runs made before these keys existed keep their networks
    lstm_hidden_size = Hyperparameter(256, positive_int(MAX_WIDTH), "units of the actor's and the critic's LSTM")
    net_arch = Hyperparameter(
        [64, 64], POSITIVE_INTS, "layers between the LSTM and the action and value outputs ([] for none)"
    )
    ppo_epochs = Hyperparameter(10, positive_int(1000), "PPO's passes over each rollout")

    def __init__(
        self,
        policy: nn.Module,
        family: TaskDistribution,
        config: Config,
        regularizers: dict[str, tuple[Regularizer, float]] | None = None,
        device: torch.device | str = "cpu",
        **hyperparameters: Any,
    ) -> None:
        super().__init__(policy, family, config, regularizers, "cpu", **hyperparameters)
        if self.regularizers:
            raise ValueError("rl2 does not support regularizers")
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.num_envs = config.meta_batch_size
        self.n_steps = self.episodes_per_trial * self.horizon
        seeds = np.random.SeedSequence(config.seed).generate_state(self.num_envs)
        trials = self.episodes_per_trial
        horizon = self.horizon

        def make_env(seed: int) -> Callable[[], gym.Env]:
            return lambda: RL2Env(family, horizon, np.random.default_rng(seed), trials)

        self.vec_env = DummyVecEnv([make_env(int(s)) for s in seeds])
        total = self.num_envs * self.n_steps
        self.model = RecurrentPPO(
            _recurrent_policy_class(),
            self.vec_env,
            n_steps=self.n_steps,
            batch_size=max(1, total // RL2_MINIBATCHES),
            n_epochs=self.ppo_epochs,
            policy_kwargs={"lstm_hidden_size": self.lstm_hidden_size, "net_arch": list(self.net_arch)},
            learning_rate=self.outer_lr,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
            seed=config.seed,
            device="cpu",
            verbose=0,
        )

    def step(self, rng: np.random.Generator) -> dict[str, float]:
        start = time.perf_counter()
        # the tasks of the trials starting in this step come from the run's generator
        for index, seed in enumerate(rng.integers(0, 2**31 - 1, size=self.num_envs)):
            self.vec_env.env_method("set_task_rng", int(seed), indices=[index])
        record = _Trials()
        callback = _trial_callback(record)
        before_steps = self.model.num_timesteps
        self.model.learn(total_timesteps=self.num_envs * self.n_steps, callback=callback, reset_num_timesteps=False)
        end = time.perf_counter()
        env_steps = float(self.model.num_timesteps - before_steps)
        trials = record.returns
        metrics = {
            f"train/{k.split('/', 1)[1]}": float(v)
            for k, v in self.model.logger.name_to_value.items()
            if k.startswith("train/") and isinstance(v, (int, float, np.floating, np.integer))
        }
        before = float(np.mean([t[0] for t in trials])) if trials else float("nan")
        after = float(np.mean([t[-1] for t in trials])) if trials else float("nan")
        # RecurrentPPO has already stepped; a non-finite loss is still counted towards the run's stop
        metrics.update(
            {"train/trials": float(len(trials)), NON_FINITE: float(not math.isfinite(metrics.get("train/loss", 0.0)))}
        )
        return {**metrics, **iteration_metrics(before, after, env_steps, record.sampling_s, 0.0, end - start)}

    def evaluate(self, tasks: list[dict[str, Any]], steps: int, episodes: int, seed: int) -> AdaptationResult:
        """Adaptation by experience: per task, `episodes` independent trials of `steps + 1` episodes.

        returns[i, k] is the mean over those trials of the return of episode k of task i, with the
        LSTM state carried from episode to episode of a trial. Actions are *sampled* from the policy
        (its exploration is part of what RL² learns), with torch seeded from `seed`. There are no
        adapted parameters: `adapted_params` is an empty dict.
        """
        envs = []
        for task in tasks:
            for _ in range(episodes):
                envs.append(RL2Env(self.family, self.horizon, episodes_per_trial=steps + 1, task=task))
        rng = np.random.default_rng(seed)
        observations = np.stack([env.reset(seed=int(rng.integers(2**31 - 1)))[0] for env in envs])
        active = np.ones(len(envs), dtype=bool)
        returns = np.zeros((len(envs), steps + 1))
        starts = np.ones(len(envs), dtype=bool)
        state = None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                while active.any():
                    actions, state = self.model.predict(
                        observations, state=state, episode_start=starts, deterministic=False
                    )
                    starts = np.zeros(len(envs), dtype=bool)
                    for index in np.flatnonzero(active):
                        obs, _, terminated, _, info = envs[index].step(actions[index])
                        observations[index] = obs
                        if terminated:
                            returns[index] = info[TRIAL_RETURNS]
                            active[index] = False
        finally:
            for env in envs:
                env.close()
        per_task = returns.reshape(len(tasks), episodes, steps + 1).mean(axis=1)
        return AdaptationResult(tasks, per_task, {})

    def state_dict(self) -> dict[str, Any]:
        """The recurrent policy's parameters and its Adam state, and the env steps so far."""
        policy = self.model.policy
        return {
            "policy": policy.state_dict(),
            "optimizer": policy.optimizer.state_dict(),
            "num_timesteps": int(self.model.num_timesteps),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        policy = self.model.policy
        policy.load_state_dict(state["policy"])
        if "optimizer" in state:
            policy.optimizer.load_state_dict(state["optimizer"])
        self.model.num_timesteps = int(state.get("num_timesteps", self.model.num_timesteps))
