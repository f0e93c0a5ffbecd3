"""The Admin console for platform staff: tenants, quotas, standing, plans, credits,
clusters, platform usage, the price book and the staff audit log, as pages (/staff/) and
as the admin API (/api/v1/admin/). Everyone else gets 404."""
