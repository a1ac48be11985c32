"""Fixtures every test package may use: the S3 server (tests/support/seaweed.py)."""

pytest_plugins = ["tests.support.seaweed"]
