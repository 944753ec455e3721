"""The web console at ``/ui/``: static pages over the JSON API (issue 16)."""

from antigv.protocols.ui.routes import setup

__all__ = ["setup"]
