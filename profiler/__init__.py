"""Characterization sweeps of VDD, tRCD and tRP per bank, written as BER maps to HDF5.

This package is planned (see the project issues); it holds no code yet.
"""
