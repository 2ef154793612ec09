"""Credentials never shown: redact_uri and redact_text."""

from __future__ import annotations

import pytest

from paretune.platform.redact import redact_text, redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://user:pass@host/db", "postgresql://user:***@host/db"),
        ("mysql+pymysql://u:p%40ss@h:3306/db", "mysql+pymysql://u:***@h:3306/db"),
        ("https://me:tok@mlflow.example:443/", "https://me:***@mlflow.example:443/"),
        ("http://h:5000/?token=abc&x=1", "http://h:5000/?token=***&x=1"),
        # Nothing secret: unchanged.
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("file:./mlruns", "file:./mlruns"),
    ],
)
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_redact_text_hides_the_password_wherever_it_appears():
    uri = "postgresql://paretune:s3cret@db:5432/m"
    text = f"could not connect to {uri}: password 's3cret' refused"
    assert redact_text(text, uri) == (
        "could not connect to postgresql://paretune:***@db:5432/m: password '***' refused"
    )
    assert redact_text("no secret here", "sqlite:///m.db") == "no secret here"
