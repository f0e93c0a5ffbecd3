"""The control plane: catalog, clusters, deployments, replicas, the reconcile loop,
autoscaler, placement and drivers. The model server it starts lives in `modelserver/`."""
