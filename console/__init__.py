"""Console and tenancy: organizations, members, roles, API keys, the audit log, the tenant
console pages and the management API."""
