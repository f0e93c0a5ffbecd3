"""Stripe collects what billing rates: a customer per organization, a payment method
through Checkout, the Customer Portal, a monthly subscription on one Billing Meter, the
hourly meter pushes and the webhooks. Off when no secret key is set (settings.py here)."""
