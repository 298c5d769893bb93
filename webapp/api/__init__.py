"""The JSON API v1 (docs/api.md): a token-authenticated door into the service layer."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    pass
