"""Data plane: the /v1 gateway, routing policies, limits, proxying, usage emission. Arrives with the gateway issue."""
