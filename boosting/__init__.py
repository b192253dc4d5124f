"""Error-tolerance boosting of neural networks: quantization, error-injecting inference,
retraining, tolerance characterization and DRAM mapping.

This package is planned (see the project issues); it holds no code yet.
"""
