"""Scorers: numbers computed from features (and labels) without training: transferability, selection, shift."""
