"""Meta-RL task families on Gymnasium's v5 MuJoCo envs, with a batched `mujoco.rollout` sampler.

Families: goal locomotion (`locomotion`: halfcheetah-vel, halfcheetah-dir, ant-vel, ant-dir,
ant-dir-promp, ant-goal, humanoid-dir) and random physical parameters (`random_params`: hopper-params,
walker-params). Each family's docstring defines its tasks and reward.
"""

from metarl_envs.mujoco.locomotion import (
    AntDir,
    AntDirProMP,
    AntGoal,
    AntVel,
    HalfCheetahDir,
    HalfCheetahVel,
    HumanoidDir,
)
from metarl_envs.mujoco.random_params import HopperParams, Walker2dParams

__all__ = [
    "AntDir",
    "AntDirProMP",
    "AntGoal",
    "AntVel",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "HopperParams",
    "HumanoidDir",
    "Walker2dParams",
]
