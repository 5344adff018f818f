"""Payments: charges and refunds orders through a card provider, driven by messages only."""
