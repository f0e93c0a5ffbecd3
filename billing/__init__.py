"""Money: plans, the price book, rating of metering's rollups, invoices, credits, budgets,
spend caps, the Billing page, and Stripe (billing/stripe/)."""
