"""The fake API server checked: its own tests, and each contract scenario on the fake
and (marked real) on a real kube-apiserver."""
