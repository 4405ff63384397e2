"""Multi-subject (amortized) training: memory-mapped subject caches, DDP training loop."""

from ._data import TrainingSubject, load_training_subjects, prepare_training_subject
from ._train import TrainConfig, parameter_checksum, train

__all__ = ["TrainConfig", "TrainingSubject", "load_training_subjects", "parameter_checksum",
           "prepare_training_subject", "train"]
