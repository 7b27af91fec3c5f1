"""Operating the engine: the demo pipeline's orchestration, consumer lag, preflight checks.

Top layer, beside the CLI: it starts and watches the stages; no stage imports it.
"""
