"""Matting worker: the shared worker server with the matting stage and its engines."""
