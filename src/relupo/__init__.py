"""relupo: offline preference optimization of language models with RePO and its baselines."""

from relupo.config import TrainConfig, load_config
from relupo.errors import ConfigError, DataError, RelupoError


def train(config: TrainConfig) -> dict:
    """Train a model as configured and return the run summary (see relupo.train.train)."""
    from relupo.train import train as run_training

    return run_training(config)


__all__ = ["ConfigError", "DataError", "RelupoError", "TrainConfig", "load_config", "train"]
__version__ = "0.1.0"
