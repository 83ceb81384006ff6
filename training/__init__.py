"""Training side of fgssl: data, augmentation, objective, trainer, evaluation and CLIs."""
