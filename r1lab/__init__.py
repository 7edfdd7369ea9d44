"""r1lab: train reasoning language models with the DeepSeek-R1 recipe, end to end."""

__version__ = "0.1.0"
