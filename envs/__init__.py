"""metarl's built-in task families, registered through the same entry points a plugin uses.

Importing this package also registers the Gymnasium IDs, so that
`gymnasium.make("metarl_envs:metarl/Navigation2D-v0", task={"goal": [0.3, -0.2]})` works.
"""

import gymnasium as gym

_GYM_IDS = {
    "metarl/Navigation2D-v0": ("metarl_envs.navigation:Navigation2DEnv", 100, {}),
    "metarl/Bandit-v0": ("metarl_envs.bandit:BernoulliBanditEnv", 1, {}),
    "metarl/TabularMDP-v0": ("metarl_envs.tabular_mdp:TabularMDPEnv", 10, {}),
    "metarl/HalfCheetahVel-v0": ("metarl_envs.mujoco.locomotion:HalfCheetahVelEnv", 200, {}),
    "metarl/HalfCheetahDir-v0": ("metarl_envs.mujoco.locomotion:HalfCheetahDirEnv", 200, {}),
    "metarl/AntVel-v0": ("metarl_envs.mujoco.locomotion:AntVelEnv", 200, {}),
    "metarl/AntDir-v0": ("metarl_envs.mujoco.locomotion:AntDirEnv", 200, {}),
    "metarl/AntDirProMP-v0": ("metarl_envs.mujoco.locomotion:AntDirProMPEnv", 100, {}),
    "metarl/AntGoal-v0": ("metarl_envs.mujoco.locomotion:AntGoalEnv", 200, {}),
    "metarl/HumanoidDir-v0": ("metarl_envs.mujoco.locomotion:HumanoidDirEnv", 200, {}),
    "metarl/HopperParams-v0": ("metarl_envs.mujoco.random_params:HopperParamsEnv", 200, {}),
    "metarl/Walker2dParams-v0": ("metarl_envs.mujoco.random_params:Walker2dParamsEnv", 200, {}),
}

for _env_id, (_entry_point, _steps, _kwargs) in _GYM_IDS.items():
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry_point, max_episode_steps=_steps, kwargs=_kwargs)
