"""Base models: each exposes its state views (see the model contract in the README)."""
