"""event-display: a CloudEvents subscriber that shows what it got (Knative's sample of that name).

Image `labkit/event-display`. Run it: PORT=8080 python -m labkit.apps.event_display
Behaviour (flaky, hanging, replying, file functions) comes from SINK_* variables; see
labkit.eventing.sink.
"""

from labkit.eventing.sink import main

if __name__ == "__main__":
    main()
