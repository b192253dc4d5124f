"""Compatibility alias: TOML reading moved to :mod:`softmc_host.files` (the one files module)."""

from softmc_host.files import MAX_TOML_BYTES, parse_toml, read_toml

__all__ = ["read_toml", "parse_toml", "MAX_TOML_BYTES"]
