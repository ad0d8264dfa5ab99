"""Workflows that compose runs (rank, auto, lr-find, demo, shift): they sit above the engine and the API."""
