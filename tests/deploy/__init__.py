"""Deploy files and docs: manifests, chart, kustomize, ServiceMonitor, alerts, image, quick start, README."""
