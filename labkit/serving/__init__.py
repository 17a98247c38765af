"""Knative Serving on a laptop: the KPA autoscaler's policy, metric windows and configuration.

`kpa` decides pod counts, `metrics_window` averages metrics as Knative's collector does,
`autoscaler_config` holds the config-autoscaler defaults and the revision annotations,
`kpa_scaler` turns a decision into replicas (bounds, scale to zero), and `hpa` (spec and
replica calculator) with `hpa_sync` (stabilisation, scaling policies) are Kubernetes' HPA,
which scales the HPA class on CPU. All of them are pure policy code.
"""
