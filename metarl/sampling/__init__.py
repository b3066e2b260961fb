"""Rollouts of a whole meta-batch at once: episodes carry a leading task dimension."""

from metarl.sampling.episodes import Episodes
from metarl.sampling.sampler import sample_episodes
from metarl.sampling.vector_env import GymVectorTaskEnv, make_vector_env
from metarl.tasks import VectorTaskEnv

__all__ = ["Episodes", "GymVectorTaskEnv", "VectorTaskEnv", "make_vector_env", "sample_episodes"]
