"""Names of the metrics every meta-learner reports each iteration, declared once.

The trainer, the CLI, the sweep, plots and loggers read these names; a learner adds its own
(`train/*`, e.g. MAML-TRPO's line search, ProMP's inner KL) only for what it has.
"""

from __future__ import annotations

RETURN_BEFORE = "return/before_adaptation"
RETURN_AFTER = "return/after_adaptation"
SUCCESS_BEFORE = "success_rate/before_adaptation"
SUCCESS_AFTER = "success_rate/after_adaptation"
VALIDATION_RETURN = "validation/return_after_adaptation"
NON_FINITE = "train/non_finite"  # 1 when the update was refused for NaN/Inf values
POLICY_STD = "policy/std"
ENV_STEPS = "perf/env_steps"
ENV_STEPS_PER_S = "perf/env_steps_per_s"
SAMPLING_S = "perf/sampling_s"
ADAPTATION_S = "perf/adaptation_s"
OUTER_STEP_S = "perf/outer_step_s"
ITERATION_S = "perf/iteration_s"
WALL_TIME_S = "perf/wall_time_s"
#: what TensorBoard's hparams view summarises
SUMMARY = [RETURN_BEFORE, RETURN_AFTER, VALIDATION_RETURN]


def iteration_metrics(
    before: float, after: float, env_steps: float, sampling_s: float, adaptation_s: float, iteration_s: float
) -> dict[str, float]:
    """The returns and timings every learner reports; the outer step is the rest of the iteration."""
    return {
        RETURN_BEFORE: before,
        RETURN_AFTER: after,
        ENV_STEPS: env_steps,
        ENV_STEPS_PER_S: env_steps / iteration_s,
        SAMPLING_S: sampling_s,
        ADAPTATION_S: adaptation_s,
        OUTER_STEP_S: iteration_s - sampling_s - adaptation_s,
        ITERATION_S: iteration_s,
    }
