"""The request log: the merchant's own recent API calls (GET /api/v1/requests)."""
