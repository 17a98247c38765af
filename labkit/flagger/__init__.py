"""Flagger (flagger.app/v1beta1): Canary and MetricTemplate kinds, the pure analysis step
(analysis.py, policy) and the live controller that runs it (controller.py)."""
