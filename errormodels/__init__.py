"""EDEN's error models, fitted to BER maps, and bit-error injection into tensors.

- :mod:`errormodels.models`: the four models (0 uniform, 1 wordline, 2 bitline, 3 bit-value), by name.
- :mod:`errormodels.fit`: maximum-likelihood fits, selection by BIC/AIC and EDEN's rule,
  partitions; ``python -m errormodels.fit MAP.h5 -o model.json``.
- :mod:`errormodels.curves`: BER vs VDD / tRCD / tRP per partition, monotone fits, inversion.
- :mod:`errormodels.layout`: where a tensor's bytes sit in DRAM (bank, row, column).
- :mod:`errormodels.inject`: exact, sparse bit-error injection into tensors of any dtype.

Formats: ``docs/error-model-format.md``.
"""
