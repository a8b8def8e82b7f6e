"""Experiments: the speedrun (the main job) and its report, and the RNN-vs-transformer comparison."""
