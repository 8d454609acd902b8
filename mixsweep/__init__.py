"""mixsweep: how the make-up of pre-training data changes what a model can do after fine-tuning."""

__version__ = "0.1.0"
