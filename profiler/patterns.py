"""Compatibility alias: the data patterns are defined once, in :mod:`softmc_host.patterns`."""

from softmc_host.patterns import MAX_RANDOM_SEED, PATTERN_NAMES, Pattern, PatternError, parse_pattern

__all__ = ["Pattern", "PatternError", "parse_pattern", "PATTERN_NAMES", "MAX_RANDOM_SEED"]
