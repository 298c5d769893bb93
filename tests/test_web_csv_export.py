"""CSV exports cannot carry a formula (OWASP CSV injection), and numbers stay numbers."""

from __future__ import annotations

import csv
import io
import re

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import actor
from tests.factories import make_catalog
from tests.web import signed_in
from webapp.services import usage, wallets
from webapp.web.csv_cells import FORMULA_STARTS, safe_cell

C = "cust-6d11ca90"
NUMBER = st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str)


def _is_number(cell: str) -> bool:
    """A plain decimal as our exports write amounts: optional minus, ASCII digits, a point."""
    return re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", cell) is not None


@given(st.sampled_from(FORMULA_STARTS), st.text())
def test_a_cell_that_a_spreadsheet_would_run_is_made_text(start, rest):
    value = start + rest
    cell = safe_cell(value)
    assert cell == value if _is_number(value) else cell == "'" + value


@given(st.one_of(st.text(), NUMBER, st.integers()))
def test_a_safe_cell_never_starts_a_formula_and_numbers_are_left_alone(value):
    cell = safe_cell(value)
    if isinstance(value, int) or _is_number(value):
        assert cell == value
    else:
        assert not cell.startswith(FORMULA_STARTS)
        assert cell.removeprefix("'") == value or cell == value


HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "@SUM(1+1)*cmd"]


def _rows(client, url: str) -> list[list[str]]:
    response = client.get(url)
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_exports_neutralise_user_text_and_keep_amounts_numeric(client, app):
    make_catalog()
    finance = actor("admin")
    wallets.topup_wallet(
        finance,
        customer_key=C,
        credit_system="credits",
        amount="5",
        reference=HOSTILE[0],
        note="\t=1+1",
    )
    wallets.adjust_wallet(
        finance,
        customer_key=C,
        credit_system="credits",
        amount="-1.5",
        reason=HOSTILE[1],
        reference="-2+3",
    )
    usage.record_usage(
        finance, customer_key=C, feature_key="api_calls", amount=2, event_id=HOSTILE[2]
    )
    signed_in(client, "support")
    ledger = _rows(client, f"/customers/{C}/ledger.csv")
    events = _rows(client, f"/customers/{C}/events.csv")
    for row in ledger[1:] + events[1:]:
        for cell in row:
            assert _is_number(cell) or not cell.startswith(FORMULA_STARTS), row
    adjustment = next(r for r in ledger if r[2] == "adjustment")
    assert adjustment[4] == "-1.5"  # a negative amount is a number, written as it is
    assert adjustment[6] == "'-2+3" and adjustment[7] == "'" + HOSTILE[1]
    topup = next(r for r in ledger if r[2] == "topup")
    assert topup[6] == "'" + HOSTILE[0] and topup[7] == "'=1+1"  # notes are stripped
    assert events[1][1] == "'" + HOSTILE[2]
