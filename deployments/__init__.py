"""Control plane and serving: catalog, clusters, deployments, replicas, reconcile loop, drivers, model server. Arrives with the model server and control plane issues."""
