"""Data plane: the /v1 gateway, model routes and routing policies, limits, proxying, usage emission."""
