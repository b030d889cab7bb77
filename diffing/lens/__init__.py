"""Diffing methods that read the two models' outputs and activations side by side (lens, amplification)."""
