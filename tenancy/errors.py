"""Errors raised by console services. Views turn them into 400/403/409 answers or form errors."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that breaks a business rule. `field` names the input to fix, if any, and
    `details` lists each problem with it when there are several."""

    status_code = 400
    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class NotAllowed(ServiceError):
    status_code = 403
    code = "permission_denied"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class SpendLimitReached(ServiceError):
    status_code = 402
    code = "spend_limit_reached"


class OrganizationSuspended(ServiceError):
    status_code = 403
    code = "organization_suspended"
