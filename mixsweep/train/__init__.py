"""Training: recipes (optimizers, layer decay, schedules), segmentation metrics and the train loops."""
