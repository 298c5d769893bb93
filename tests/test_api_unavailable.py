"""A database that cannot be reached gives JSON 503 service_unavailable with Retry-After."""

from __future__ import annotations

import pytest

from tests.api_support import check_response
from tests.conftest import TEST_CONFIG
from webapp import create_app
from webapp.extensions import db


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-directory/for/sure/webapp.sqlite3",
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2",
    ],
    ids=["sqlite", "postgresql"],
)
def test_unreachable_database_is_503_with_retry_after(url):
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        response = app.test_client().post(
            "/api/v1/usage",
            json={"customer_key": "c", "feature_key": "f"},
            headers={"Authorization": "Bearer mk_some-key-that-cannot-be-checked"},
        )
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "service_unavailable"
        assert response.headers["Retry-After"] == "1"
        check_response("POST", "/api/v1/usage", 503, response.get_json())
        db.engine.dispose()
