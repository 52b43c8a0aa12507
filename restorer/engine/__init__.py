"""Inference engine: tile planning and blending, and the runner that drives models over images."""
