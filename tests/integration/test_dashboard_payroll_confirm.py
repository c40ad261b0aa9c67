"""The dashboard's payroll upload: the confirm creates what the preview showed ready, of the file
it judged (api_service/dashboard/pages/bulk.py). It sent the whole file back to be judged again:
a row the preview showed invalid (over the balance) was created after a top-up, and a file
swapped in the form's hidden field was created unseen (CSV review)."""

import base64
import html
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from api_service.dashboard.csv_payroll import COLUMNS
from cli.merchants import NewMerchant
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth
from tests.support.dashboard_client import signed_in

CONFIRM = "/dashboard/payouts/bulk/confirm"
HIDDEN = re.compile(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)">')


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings) as client:
        yield client


def _payroll(*references: str, amount: str = "10.00") -> bytes:
    rows = [f"{ref},{amount},WALLET,,JAZZCASH,03001234567,Ali,Salary" for ref in references]
    return ("\n".join([",".join(COLUMNS), *rows]) + "\n").encode()


async def _preview(client: httpx.AsyncClient, csrf: str, content: bytes) -> dict[str, str]:
    """The preview's confirm form: its hidden fields."""
    shown = await client.post(
        "/dashboard/payouts/bulk",
        data={"csrf_token": csrf},
        files={"file": ("payroll.csv", content, "text/csv")},
    )
    assert shown.status_code == 200, shown.text
    form = shown.text.split(f'action="{CONFIRM}"', 1)[1].split("</form>", 1)[0]
    return {name: html.unescape(value) for name, value in HIDDEN.findall(form)}


async def _payouts_named(client: httpx.AsyncClient, merchant: NewMerchant, reference: str) -> int:
    listed = await client.get(
        f"{API}/payouts", params={"merchantReference": reference}, headers=auth(merchant, "")
    )
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"]["payouts"])


async def test_the_confirm_creates_no_row_the_preview_showed_not_ready(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="15.00")  # one row of two: the other is invalid
    csrf = await signed_in(dashboard, merchant)
    first, second = (f"pay-{uuid.uuid4().hex[:8]}" for _ in range(2))
    form = await _preview(dashboard, csrf, _payroll(first, second))
    topped = await dashboard.post(
        f"{API}/sandbox/top-up", json={"amount": "100.00"}, headers=auth(merchant)
    )
    assert topped.is_success, topped.text

    done = await dashboard.post(CONFIRM, data=form)

    assert done.status_code == 200, done.text
    assert await _payouts_named(dashboard, merchant, first) == 1
    assert await _payouts_named(dashboard, merchant, second) == 0
    assert 'data-count="not_sent"><strong>1</strong>' in done.text


async def test_a_file_swapped_between_the_preview_and_the_confirm_is_refused(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)
    seen, unseen = (f"pay-{uuid.uuid4().hex[:8]}" for _ in range(2))
    form = await _preview(dashboard, csrf, _payroll(seen))
    form["csv_base64"] = base64.b64encode(_payroll(seen, unseen)).decode()

    refused = await dashboard.post(CONFIRM, data=form)

    assert refused.status_code == 400
    assert "came back changed" in refused.text
    assert await _payouts_named(dashboard, merchant, seen) == 0
    assert await _payouts_named(dashboard, merchant, unseen) == 0


def _amount_cell(page: str, line: int) -> str:
    row = page.split(f'data-line="{line}"', 1)[1].split("</tr>", 1)[0]
    (cell,) = re.findall(r'<td class="num">(.*?)</td>', row, flags=re.S)
    return str(cell).strip()


async def test_a_row_refused_for_its_amount_shows_it_as_sent_on_the_confirm_page(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """There it is `not_sent`, not `invalid`: its amount went through `money`, which rounds a
    third decimal away and reads `1_500` as 1,500.00, the row's fault hidden (diff review)."""
    csrf = await signed_in(dashboard, await make_merchant())
    good, three_decimals, underscored = (f"pay-{uuid.uuid4().hex[:8]}" for _ in range(3))
    lines = _payroll(good).decode().splitlines()
    content = (
        "\n".join(
            [
                *lines,
                lines[-1].replace(f"{good},10.00", f"{three_decimals},1500.005"),  # line 3
                lines[-1].replace(f"{good},10.00", f"{underscored},1_500"),  # line 4
            ]
        ).encode()
        + b"\n"
    )

    done = await dashboard.post(CONFIRM, data=await _preview(dashboard, csrf, content))

    assert done.status_code == 200, done.text
    assert (_amount_cell(done.text, 2), _amount_cell(done.text, 3)) == ("10.00", "1500.005")
    assert _amount_cell(done.text, 4) == "1_500"
