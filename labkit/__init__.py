"""labkit: local, faithful equivalents of Knative, Istio/Envoy and KServe for teaching."""

__version__ = "0.1.0"
