"""Self-hostable cloud workspaces that speak JJHub's workspace API."""

__version__ = "0.1.0"
