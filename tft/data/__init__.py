"""Data: readers per format, dataset loading with label checks, downloads, and model features."""

from tft.data.dataset import Dataset, Split, load_dataset, resolve_data_dir
from tft.data.readers import TextExample, TokenExample

__all__ = ["Dataset", "Split", "load_dataset", "resolve_data_dir", "TextExample", "TokenExample"]
