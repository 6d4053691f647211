"""Datasets from annotations, augmentation, training loops and the demo-model recipe."""
