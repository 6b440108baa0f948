"""The real-server tier: a real kube-apiserver and etcd from KUBEBUILDER_ASSETS (every test marked real)."""
