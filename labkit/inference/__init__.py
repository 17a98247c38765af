"""KServe equivalent: storage, runtimes, V1/V2 protocols, the model server and its batcher.

The InferenceService kind lives in `labkit.inference.kinds` (imported through
`labkit.components`); the model server runs as its own process
(`python -m labkit.inference.server`).
"""
