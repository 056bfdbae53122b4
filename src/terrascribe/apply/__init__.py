"""Putting models to work on imagery: open-vocabulary (zero-shot) maps of GeoTIFFs."""
