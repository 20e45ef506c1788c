"""digitkit: handwritten-digit classification from training to fast production inference."""

__version__ = "0.1.0"
