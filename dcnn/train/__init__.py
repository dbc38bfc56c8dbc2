"""Training: the ``dcnn train`` job (config, divergence guard, checkpoints, resume), the Keras-named
callbacks, metrics and on-device augmentation.  ``DCNNetwork.fit`` itself is in ``dcnn.model``."""
from .augment import RandomShiftFlip
from .callbacks import (CosineDecay, CSVLogger, EarlyStopping, LearningRateScheduler, LRSchedule, ModelCheckpoint,
                        OneCycleLR, StepDecay, StepwiseLR, one_cycle)
from .config import RunPlan, TrainConfig, merge_resume_config
from .job import Diverged, Interrupted, TrainingError, train
from .monitor import Monitor

__all__ = ["CSVLogger", "CosineDecay", "Diverged", "EarlyStopping", "Interrupted", "LRSchedule",
           "LearningRateScheduler", "ModelCheckpoint", "Monitor", "OneCycleLR", "RandomShiftFlip", "RunPlan",
           "StepDecay", "StepwiseLR", "TrainConfig", "TrainingError", "merge_resume_config", "one_cycle", "train"]
