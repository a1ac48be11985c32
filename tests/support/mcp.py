"""FastMCP's client for the tests of the gateway's `/mcp`, imported without authlib's import
warnings (authlib, a fastmcp dependency, installs an "always" filter for them in front of
pytest's: see gateway/api/mcp.py)."""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from fastmcp import Client
    from fastmcp.client.transports import StreamableHttpTransport
    from fastmcp.exceptions import ToolError
    from mcp.types import ImageContent, TextContent

__all__ = ["ImageContent", "TextContent", "ToolError", "mcp_client"]


def mcp_client(base_url: str, key: str | None = None, timeout: float = 60) -> Client[Any]:
    """A client of `<base_url>/mcp` over streamable HTTP, with `key` as its bearer key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(StreamableHttpTransport(f"{base_url}/mcp", headers=headers), timeout=timeout)
