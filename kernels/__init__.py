"""Fast generation engines, installed as ``wavegen.kernels``."""
