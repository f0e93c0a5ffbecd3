"""Metering and money: usage events and their hand-off from the gateway, ingest and
rollups, the price book, rating, invoices, credits, budgets and Stripe."""
