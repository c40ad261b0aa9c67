"""Webhook deliveries, resends, the event log and the merchant's webhook endpoint."""

from api_service.webhooks.endpoints import router

__all__ = ["router"]
