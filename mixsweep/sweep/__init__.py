"""Sweeps: plan the stages of a spec, run them with Ray Tune, keep results in the store, log them to W&B."""
