"""Real Kubernetes control plane + node agent used by tests marked `cluster`."""
