"""Bulk payouts from a CSV file: upload, preview (each row judged by the batch service, nothing
written), confirm (POST /api/v1/payouts/batch), per-row results. A file sent twice creates
nothing twice: its references name the payouts of the first time (`duplicate`)."""

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from api_service.dashboard.context import FormDep, MerchantPage, PageDep
from api_service.dashboard.csv_payroll import (
    COLUMNS,
    REQUIRED_COLUMNS,
    PayrollFileError,
    PayrollRow,
    decode,
    read_payroll,
    sample,
)
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.sessions import Signer
from api_service.payouts.batch import MAX_BATCH_ITEMS, REPEATS_ITEM, judge_batch

router = dashboard_router()
UPLOAD_PATH = "/dashboard/payouts/bulk"
CONFIRM_PATH = "/dashboard/payouts/bulk/confirm"
PREVIEW = "payroll-preview"  # the signed field: the file's digest and the lines shown ready
NOT_SENT = "not_sent"  # a row the preview did not show ready: confirmed, it is not sent
SAMPLE_ROWS = [
    {
        "merchantReference": "salary-2026-01-0001",
        "amount": "45000.00",
        "destType": "BANK",
        "bankCode": "HBL",
        "accountNumber": "12345678901234",
        "accountTitle": "Ayesha Khan",
        "purpose": "Salary January",
    },
    {
        "merchantReference": "salary-2026-01-0002",
        "amount": "38500.50",
        "destType": "WALLET",
        "walletCode": "JAZZCASH",
        "accountNumber": "03001230002",
        "accountTitle": "Muhammad Ali",
        "purpose": "Salary January",
    },
]


@dataclass(frozen=True)
class RowResult:
    line: int
    item: dict[str, str]
    status: str  # ready (preview) | created | duplicate | invalid | not_sent (confirm)
    errors: list[dict[str, str]] = field(default_factory=list)
    payout_id: str | None = None


def _results(rows: list[PayrollRow], judged: list[dict[str, Any]]) -> list[RowResult]:
    """Each row with its result (by index, the order the rows were sent in)."""
    by_index = {int(result["index"]): result for result in judged}
    results = []
    for index, row in enumerate(rows):
        result = by_index.get(index, {"status": "ready"})
        payout_id = result.get("payoutId") or (result.get("payout") or {}).get("id")
        errors = [_by_line(error, rows) for error in result.get("errors") or []]
        results.append(RowResult(row.line, row.item, result["status"], errors, payout_id))
    return results


_REPEATED_ITEM = re.compile(rf"{REPEATS_ITEM} (\d+)")


def _by_line(error: dict[str, str], rows: list[PayrollRow]) -> dict[str, str]:
    """The API names an earlier item by its index; the page names rows by their line in the
    file ("repeats item 0" named a number the page never shows)."""
    message = _REPEATED_ITEM.sub(
        lambda item: f"repeats line {rows[int(item[1])].line}", error["message"]
    )
    return {**error, "message": message}


def _counts(results: list[RowResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def _upload_page(page: MerchantPage, error: str | None = None, status_code: int = 200) -> Response:
    """The upload form; a refused file's `error` is said under the file field, which takes the
    focus (an alert atop the page left the field unmarked, like no other form)."""
    return page.render(
        "bulk.html",
        active="bulk",
        status_code=status_code,
        errors={"file": error} if error else {},
        columns=COLUMNS,
        required=REQUIRED_COLUMNS,
        max_rows=MAX_BATCH_ITEMS,
    )


@router.get(UPLOAD_PATH)
async def bulk_form(page: PageDep) -> Response:
    return _upload_page(page)


@router.get(f"{UPLOAD_PATH}/sample.csv")
async def sample_file(page: PageDep) -> Response:
    return Response(
        sample(SAMPLE_ROWS),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="payroll-sample.csv"'},
    )


@router.post(UPLOAD_PATH)
async def preview(form: FormDep) -> Response:
    upload = (await form.request.form()).get("file")
    if not isinstance(upload, UploadFile):
        return _upload_page(form, "Choose a CSV file.", 400)
    content = await upload.read()
    try:
        rows = read_payroll(decode(content), max_rows=MAX_BATCH_ITEMS)
    except PayrollFileError as error:
        return _upload_page(form, str(error), 400)
    judged = await judge_batch(form.api.session, form.api.merchant, [row.item for row in rows])
    results = _results(rows, judged.result.items)
    ready = [result.line for result in results if result.status == "ready"]
    return form.render(
        "bulk_preview.html",
        active="bulk",
        file_name=upload.filename or "payroll.csv",
        # The file's own bytes, for the confirm to read exactly what was judged: as the text of
        # a form field, the browser's HTML parser made a NUL (refused in the preview) U+FFFD,
        # which the confirm then created.
        csv_base64=base64.b64encode(content).decode(),
        preview=_signer(form).sign(PREVIEW, _previewed(content, ready)),
        results=results,
        counts=_counts(results),
    )


@router.post(CONFIRM_PATH)
async def confirm(form: FormDep) -> Response:
    """Creates the rows the preview showed ready, of the file it judged. The whole file came
    back and was judged again: a row shown invalid (over the balance) was created after a
    top-up, and a file swapped in the form's field was created unseen (CSV review)."""
    try:
        content = base64.b64decode(await form.text("csv_base64"), validate=True)
        rows = read_payroll(decode(content), max_rows=MAX_BATCH_ITEMS)
    except binascii.Error:
        return _upload_page(form, "The previewed file came back damaged: upload it again.", 400)
    except PayrollFileError as error:
        return _upload_page(form, str(error), 400)
    previewed = _signer(form).verified(PREVIEW, await form.text("preview"))
    digest, _, lines = (previewed or "").partition(":")
    if previewed is None or digest != _digest(content):
        return _upload_page(form, "The previewed file came back changed: upload it again.", 400)
    ready = {int(line) for line in lines.split(",") if line}
    sent = [row for row in rows if row.line in ready]
    if not sent:
        return _upload_page(form, "No row of the preview was ready to create.", 400)
    answer = await form.api.create_payout_batch(
        [row.item for row in sent], await form.text("idempotency_key")
    )
    answered = {result.line: result for result in _results(sent, answer.data["results"])}
    results = [answered.get(row.line) or RowResult(row.line, row.item, NOT_SENT) for row in rows]
    return form.render("bulk_results.html", active="bulk", results=results, counts=_counts(results))


def _signer(form: MerchantPage) -> Signer:
    return Signer.of(form.settings)


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _previewed(content: bytes, ready_lines: list[int]) -> str:
    return f"{_digest(content)}:{','.join(map(str, ready_lines))}"
