"""LungView: chest CT viewer and lung-nodule pipeline (Deep Learning with PyTorch, part 2)."""

__version__ = "0.1.0"
