"""Reading, views and batches for training: the loaders of the GF, DeepDXF and joint trainers."""
