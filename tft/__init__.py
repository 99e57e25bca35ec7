"""tft: train-to-serve toolchain for transformer NLP models."""

__version__ = "0.1.0"
