"""kubelet-endpoints-reconciler: the modules behind ``reconciler.py``."""
