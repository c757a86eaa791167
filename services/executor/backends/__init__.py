"""Inference engines behind one Protocol; one module per engine."""
