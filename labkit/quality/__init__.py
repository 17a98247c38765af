"""Model-quality monitoring: predictions logged by KServe's payload logger, true labels sent
later as feedback and joined to them by request id, accuracy per model version, and a Flagger
webhook gate on it.

- `payloads`  what a logged inference response says: the predicted labels and which version
              served them (pure)
- `ledger`    predictions by request id, feedback joined to them, counts and sliding windows
              per model version (pure state, no network)
- `gate`      Flagger `rollout` webhook metadata -> a verdict on the canary's accuracy (policy)
- `monitor`   the HTTP sink/feedback/gate server and its Prometheus metrics
              (image `labkit/model-monitor`, `python -m labkit.apps.model_monitor`)
"""
