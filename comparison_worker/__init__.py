"""Comparison worker: the shared worker server with the comparison stage."""
