"""Early stopping for the DeepDXF trainer: the shared class of utils/early_stopping.py."""
from utils.early_stopping import EarlyStopping

__all__ = ["EarlyStopping"]
