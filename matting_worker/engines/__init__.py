"""Matting engines, one module per family, found by name through `registry`."""
