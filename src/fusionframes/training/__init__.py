"""Training: configuration, captioned-video datasets and the training loops."""
