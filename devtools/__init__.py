"""Developer tools outside the shipped code: the launcher that starts every service and the
simulator as processes (used by the demo and the end-to-end tests) and the demo itself
(`python -m devtools.demo`).

They live outside `tongban/` because they import the services and `sim/`; `tongban/` never
does (tests/unit/test_layers.py).
"""
