"""Metering and money: usage events (the gateway hands them here); rollups, prices and invoices arrive with the metering and billing issues."""
