"""Measurements of a built model: weights, activations, training state."""
