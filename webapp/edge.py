"""Checks that every request passes before any door (dashboard, API, Metrifox) sees it."""

from __future__ import annotations

from flask import Flask, request
from werkzeug.datastructures import MultiDict

from .errors import ValidationError


def refuse_nul() -> None:
    """PostgreSQL text cannot hold a NUL character: one in a search, a filter, a sign-in email
    or any other query or form value would reach the database and fail there as a 500 (SQLite
    would store it). No value of ours has one: refuse it here, on both databases alike."""
    if "\x00" in request.path:
        raise ValidationError("The address contains a NUL character.")
    form = request.form if request.mimetype in _FORM_TYPES else MultiDict()
    for values in (request.args, form):
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                field = name.replace("\x00", "")
                raise ValidationError(f"`{field}` contains a NUL character.", field=field)


_FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


def register(app: Flask) -> None:
    app.before_request(refuse_nul)
