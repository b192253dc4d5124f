"""Build hook for the one compiled part: the block sampler of errormodels.inject.

All metadata lives in setup.cfg. The extension is optional: without a C compiler the
package installs anyway and errormodels.inject falls back to its vectorised torch sampler,
which gives the same flips, only slower (``errormodels.inject.KERNEL`` says which is used).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("errormodels._flipkernel", ["errormodels/_flipkernel.c"], optional=True)])
