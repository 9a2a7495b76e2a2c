"""wavegen: train SampleRNN / WaveNet on your recordings and render hours of new audio, fast."""

__version__ = "0.1.0"
