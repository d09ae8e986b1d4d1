"""Training and evaluation of encoders. Imported as radsearch.training."""
