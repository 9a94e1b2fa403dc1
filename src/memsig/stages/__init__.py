"""The pipeline's stages: train the base model; compute its signature."""
