"""Inference: turning a model's logits into text."""
