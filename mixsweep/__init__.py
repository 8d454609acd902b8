"""mixsweep: how the make-up of pre-training data changes what a model can do after fine-tuning.

`from mixsweep import Sweep` is the Python API (mixsweep.api); the package itself imports nothing heavy."""

__version__ = "0.1.0"
__all__ = ["Sweep", "__version__"]


def __getattr__(name: str):
    if name == "Sweep":  # imported on first use: `import mixsweep` stays light for the CLI
        from mixsweep.api import Sweep

        return Sweep
    raise AttributeError(f"module 'mixsweep' has no attribute {name!r}")
