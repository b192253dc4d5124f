"""``python -m boosting.map``: a thin shell over :func:`map_files`.

The library function reads the three inputs (fitted error model, tolerance, network file),
maps the network (:func:`boosting.map.map_network`) and returns the ``eden-dram-config``
document; the command writes it and its tensor CSV and prints :func:`boosting.map.format_table`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from boosting.checkpoint import CheckpointError, load_network
from boosting.map.allocate import map_network
from boosting.map.base import GRANULARITIES, MODES, MapError, PathLike, load_tolerance
from boosting.map.config import format_table, save_config, write_tensor_csv
from boosting.map.partitions import load_model, nominal_of, partitions_from_model
from boosting.map.sizes import tensor_sizes
from softmc_host.cli import add_config, add_out, add_verbosity, configure_logging, fail, parse_args
from softmc_host.files import sha256_file

__all__ = ["map_files", "build_parser", "main"]

log = logging.getLogger(__name__)


def map_files(model: PathLike, tolerance: PathLike, network: PathLike, *, mode: str = "power",
              granularity: str = "coarse", capacity_rows: Optional[int] = None, fmt: Optional[str] = None,
              batch_size: int = 1) -> dict[str, Any]:
    """Map the tensors of a network file to the partitions of a fitted error model.

    Parameters
    ----------
    model : path
        Fitted error model (``python -m errormodels.fit``).
    tolerance : path
        Tolerance document (``python -m boosting.characterize``).
    network : path
        Network file (``eden-network``, ``python -m boosting.train``).
    mode, granularity, capacity_rows
        As for :func:`boosting.map.map_network` (``power`` / ``coarse`` by default).
    fmt : str, optional
        Numeric format of the stored tensors (default: the tolerance's).
    batch_size : int
        Inputs held in DRAM at once (sizes the input feature maps).

    Returns
    -------
    dict
        The ``eden-dram-config`` document, its ``source`` naming the three files and their SHA-256.

    Raises
    ------
    MapError
        A malformed input (one line naming the file and the field) or no feasible mapping.
    CheckpointError
        An unreadable network file.
    """
    doc = load_model(model)
    partitions = partitions_from_model(doc)
    tolerances, tol_fmt = load_tolerance(tolerance)
    fmt = fmt or tol_fmt
    if fmt is None:
        raise MapError("the tolerance does not record a numeric format: give --fmt")
    nf = load_network(network)
    sizes = tensor_sizes(nf.net, fmt, nf.net.input_shape, batch_size)
    setting = doc.get("source", {}).get("setting")
    source = {
        "model_file": str(Path(model).resolve()), "model_sha256": sha256_file(model),
        "tolerance_file": str(Path(tolerance).resolve()), "tolerance_sha256": sha256_file(tolerance),
        "network": {"file": str(Path(network).resolve()), "sha256": sha256_file(network),
                    "name": nf.network, "fmt": str(fmt), "batch_size": batch_size},
        "error_model_setting": setting,
        "dimm": doc.get("source", {}).get("dimm"),
    }
    log.debug("mapping %d tensors of %s to %d partition(s), %s mode, %s granularity",
             len(sizes), nf.network, len(partitions), mode, granularity)
    return map_network(partitions, tolerances, sizes, mode=mode, granularity=granularity,
                       capacity_rows=capacity_rows, nominal=nominal_of(partitions, setting), source=source)


def build_parser() -> argparse.ArgumentParser:
    """The command's options (``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m boosting.map",
        description="Map a network's tensors to DRAM partitions and operating points (EDEN Sec. 5.5).",
    )
    parser.add_argument("--error-model", metavar="FILE", default=None,
                        help="fitted error model JSON (python -m errormodels.fit); required")
    parser.add_argument("--model", dest="error_model", help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--tolerance", metavar="FILE", default=None,
                        help="tolerance JSON (python -m boosting.characterize); required")
    parser.add_argument("--network-file", metavar="NET.pt", default=None,
                        help="network file (eden-network, python -m boosting.train); required")
    parser.add_argument("--network", dest="network_file", help=argparse.SUPPRESS)  # old spelling (a file here)
    parser.add_argument("--mode", default="power", choices=MODES,
                        help="what is reduced: power (VDD, default) or latency (tRCD/tRP)")
    parser.add_argument("--granularity", default="coarse", choices=GRANULARITIES,
                        help="coarse (one setting for the DIMM, default) or fine (per partition)")
    parser.add_argument("--capacity-rows", type=int, default=None, metavar="N", help="usable rows per partition (default all)")
    parser.add_argument("--fmt", default=None, metavar="FMT", help="numeric format (default: the tolerance file's)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="input batch held in DRAM (default 1)")
    add_out(parser, "dram-config.json", "output JSON")
    parser.add_argument("--csv", default=None, metavar="PATH", help="tensor CSV (default: the output with .csv)")
    add_verbosity(parser)
    add_config(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m boosting.map --error-model M --tolerance T --network-file NET.pt -o dram-config.json``.

    Prints the mapping table and the files written; exit 2 on bad input (one line on stderr).
    """
    parser = build_parser()
    args = parse_args(parser, argv)
    missing = [flag for flag, value in (("--error-model", args.error_model), ("--tolerance", args.tolerance),
                                        ("--network-file", args.network_file)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    configure_logging(args.verbose, args.quiet)
    try:
        config = map_files(args.error_model, args.tolerance, args.network_file, mode=args.mode,
                           granularity=args.granularity, capacity_rows=args.capacity_rows, fmt=args.fmt,
                           batch_size=args.batch_size)
        out = save_config(config, args.out)
        csv_path = write_tensor_csv(config, args.csv or Path(args.out).with_suffix(".csv"))
    except (MapError, CheckpointError, OSError) as exc:
        return fail(str(exc))
    print(format_table(config))
    print(f"written {out} and {csv_path}")
    return 0
