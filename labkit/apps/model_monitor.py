"""model-monitor: the sink for KServe's payload logger, labelled feedback, accuracy per model
version and a Flagger webhook gate (labkit.quality.monitor has the HTTP API).

Image `labkit/model-monitor`. Run it: PORT=8080 python -m labkit.apps.model_monitor
"""

from labkit.quality.monitor import main

if __name__ == "__main__":
    main()
