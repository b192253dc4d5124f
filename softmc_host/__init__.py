"""Host driver of the SoftMC DRAM tester.

- :mod:`softmc_host.isa`: bit-exact instruction words.
- :mod:`softmc_host.asm`: assembler/disassembler (``python -m softmc_host.asm``).
- :mod:`softmc_host.timing`: DDR3 timings in ns and tester cycles.
- :mod:`softmc_host.program`: programs and row read/write builders.
- :mod:`softmc_host.session`: a tester session opened by URL.
- :mod:`softmc_host.demo`: the bench demo (``python -m softmc_host.demo``).
"""

__version__ = "0.1.0"
