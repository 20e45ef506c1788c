"""digitkit: handwritten-digit classification from training to fast production inference."""

__version__ = "0.1.0"

#: Class labels in output order; every model and export uses this order.
CLASS_NAMES = tuple(str(d) for d in range(10))
