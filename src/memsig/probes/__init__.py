"""Probes: offset targets, the multi-offset decoder, baselines and the feature cache."""
