"""EDEN's error models, fitted to BER maps, and bit-error injection into tensors.

This package is planned (see the project issues); it holds no code yet.
"""
