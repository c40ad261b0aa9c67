"""Webhook service: signed delivery of payout status events."""
