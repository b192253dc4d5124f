"""Network-to-DRAM mapping: DRAM operating points and a partition for every tensor (EDEN Sec. 5.5).

EDEN's last stage takes the DRAM's error curves (BER as a function of VDD, tRCD, tRP, per
partition: ``python -m errormodels.fit``) and the tolerable BER of every network tensor (per
layer and kind, ``"weight"`` or ``"ifm"``: ``python -m boosting.characterize``), chooses DRAM
operating points and assigns each tensor to a partition. The output is a DRAM configuration
(``docs/dram-config-format.md``).

Modes
-----
``power``
    Lower VDD; tRCD and tRP stay nominal. VDD is one supply for the whole module, so a single
    VDD is chosen for every partition.
``latency``
    Lower tRCD (and tRP where the partition has a ``trp_ns`` curve); VDD stays nominal. Timings
    apply per access, so every partition gets its own tRCD / tRP.

Granularity
-----------
``coarse`` (the default)
    One operating point for the whole DIMM: the most aggressive setting whose fitted BER is at
    most the lowest tolerable BER of all tensors, in every partition that holds data; the
    tensors are placed in network order from bank 0, row 0 (row interleaving, each in a fresh
    row).
``fine``
    Greedy and capacity-aware: tensors from the most sensitive (lowest tolerable BER) to the
    least, each into the most reliable partition (lowest fitted BER at the candidate setting)
    that has room and whose BER is at most the tensor's tolerable BER. In power mode the lowest
    VDD with a feasible assignment is searched over the measured VDDs and the partitions'
    ``lowest_safe`` points; in latency mode each used partition's tRCD (tRP) is the most
    aggressive one safe for the most sensitive tensor it holds, unused partitions stay nominal.

Settings are rounded to the milder side (VDD up to 1 mV, timings up to 0.01 ns), so the fitted
BER at the reported setting never exceeds what was asked. Where a partition has both a tRCD and
a tRP curve (each measured with the other nominal) the errors of the two are added:
``BER = max(a, b, a + b - base)`` with ``a``, ``b`` the curves' BERs and ``base`` the smaller of
their values at nominal (the shared floor is counted once).

Every tensor starts at byte 0 of a row of one bank (``AddressMap(bank=b, row=r,
interleave="row")``, :func:`placements`) and occupies ``ceil(n_bytes / row_bytes)`` consecutive
rows of that bank inside its partition (coarse mode: consecutive rows of the DIMM's row order).

Modules
-------
:mod:`boosting.map.partitions`
    A fitted error model read into :class:`Partition` s (:func:`partitions_from_model`,
    :func:`load_model`, :func:`nominal_of`).
:mod:`boosting.map.sizes`
    :func:`tensor_sizes`: the bytes of every weight and input feature map.
:mod:`boosting.map.allocate`
    :func:`map_network`: operating points and the placement allocator.
:mod:`boosting.map.config`
    The ``eden-dram-config`` document: :class:`DramConfig` (msgspec types, :func:`json_schema`),
    :func:`save_config`, :func:`load_config` / :func:`read_config` (validated),
    :func:`placements` (the address maps), :func:`write_tensor_csv`, :func:`format_table`.
:mod:`boosting.map.cli`
    :func:`map_files` (the three input files to a configuration) and ``python -m boosting.map``.

The tolerance document is :mod:`boosting.tolerance`; :func:`load_tolerance` here is its reader
raising :class:`MapError`. The DIMM geometry is :class:`softmc_host.geometry.Geometry`
(``Geometry`` here is that class).
"""

from __future__ import annotations

from typing import Any, Mapping

from boosting.map.allocate import map_network
from boosting.map.base import (
    FORMAT,
    FORMAT_VERSION,
    GRANULARITIES,
    KINDS,
    MAX_JSON_DEPTH,
    MODES,
    ML605_GEOMETRY,
    NOMINAL_TRCD_NS,
    NOMINAL_TRP_NS,
    NOMINAL_VDD_V,
    SETTING_RANGES,
    Geometry,
    MapError,
    geometry_of,
    load_tolerance,
)
from boosting.map.cli import main, map_files
from boosting.map.config import (
    DramConfig,
    format_table,
    json_schema,
    load_config,
    placements,
    read_config,
    save_config,
    validate,
    write_tensor_csv,
)
from boosting.map.partitions import Partition, load_model, nominal_of, partitions_from_model
from boosting.map.sizes import tensor_sizes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODES",
    "GRANULARITIES",
    "KINDS",
    "NOMINAL_VDD_V",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "MAX_JSON_DEPTH",
    "SETTING_RANGES",
    "MapError",
    "Geometry",
    "ML605_GEOMETRY",
    "geometry_of",
    "Partition",
    "partitions_from_model",
    "nominal_of",
    "load_model",
    "load_tolerance",
    "tensor_sizes",
    "map_network",
    "map_files",
    "DramConfig",
    "json_schema",
    "validate",
    "save_config",
    "load_config",
    "read_config",
    "placements",
    "write_tensor_csv",
    "format_table",
    "main",
]


def _print_table(config: Mapping[str, Any]) -> None:
    """Deprecated: print :func:`format_table` (kept until the pipeline calls ``format_table``)."""
    print(format_table(config))
