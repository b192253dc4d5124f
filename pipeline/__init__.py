"""EDEN's whole flow on a bench as one resumable command: ``python -m pipeline``.

Profile the DIMM, fit the error model, characterize and boost the network, map it to DRAM
settings, validate on the bench through the DIMM itself, and report energy, latency and
accuracy (:mod:`pipeline.flow`).
"""
