"""Datasets: readers into one chat shape, the split, validation and analysis."""
