"""Metering and money: usage events, rollups, price book, rating, invoices, Stripe, budgets. Arrives with the metering and billing issues."""
