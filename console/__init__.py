"""Console and tenancy: organizations, members, roles, API keys, the audit log, the tenant
console pages, the management API and the staff pages."""
