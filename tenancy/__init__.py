"""Tenancy, the bottom layer: users, organizations, members and roles, invitations, API
keys, the audit logs (the tenants' and the staff's), fail-closed tenant scoping, the
request-to-organization access checks every page and API view uses, and the management
API's framework and its tenancy endpoints. It imports nothing else of the platform."""
