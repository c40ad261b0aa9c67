import uuid

import httpx

from tests.conftest import MerchantFactory


async def test_create_payout_holds_funds(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="5000.00")
    headers = {"X-API-KEY": merchant.api_key, "X-IDEMPOTENCY-KEY": str(uuid.uuid4())}
    body = {
        "merchantReference": "smoke-1",
        "amount": "1500.00",
        "destType": "WALLET",
        "walletCode": "JAZZCASH",
        "accountNumber": "03001234567",
    }
    created = await api_client.post("/api/v1/payouts", json=body, headers=headers)
    assert created.status_code == 201, created.text
    balance = (await api_client.get("/api/v1/balance", headers=headers)).json()["data"]
    assert balance["availableBalance"] == "3500.00"
    assert balance["lockedBalance"] == "1500.00"
