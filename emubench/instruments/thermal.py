"""The emulated DIMM thermal controller: a heater/TEC with a first-order lag (:class:`EmulatedThermal`)."""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from emubench.instruments.scpi import ScpiInstrument, in_range, no_arg, parse_bool, parse_number, undefined_header

__all__ = ["EmulatedThermal"]


class EmulatedThermal(ScpiInstrument):
    """An emulated DIMM heater/TEC controller.

    The DIMM temperature follows a first-order lag in wall-clock time towards the
    set point (output on) or towards ambient (output off)::

        T(t + dt) = target + (T(t) - target) * exp(-dt / tau_s)

    and ``MEAS:TEMP?`` adds uniform sensor noise in ``[-noise_c, +noise_c]``
    drawn from a generator seeded with ``seed``.

    Commands (besides the common ones):

    ===================  ==========================================
    ``TEMP:SET <c>``     set point in degC, 0..110 (outside: -222)
    ``TEMP:SET?``        set point
    ``MEAS:TEMP?``       measured DIMM temperature in degC
    ``OUTP ON|OFF|1|0``  regulation on/off; ``OUTP?`` answers 1/0
    ===================  ==========================================

    Parameters
    ----------
    initial_c : float
        Temperature of the DIMM and power-on set point in degC.
    seed : int
        Seed of the sensor noise.
    tau_s : float
        Time constant of the thermal lag in s (0.2 s keeps tests fast).
    serial : str
        Serial number in the ``*IDN?`` reply.
    ambient_c : float
        Temperature the DIMM drifts to with the output off, in degC.
    noise_c : float
        Half-width of the uniform sensor noise in degC.
    clock : callable
        Monotonic clock in seconds (injectable for tests).
    """

    MIN_C = 0.0
    MAX_C = 110.0

    def __init__(
        self,
        initial_c: float = 25.0,
        seed: int = 0,
        tau_s: float = 0.2,
        *,
        serial: str = "TEC-0001",
        ambient_c: float = 25.0,
        noise_c: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("BENCH-TEC", serial)
        if not self.MIN_C <= initial_c <= self.MAX_C:
            raise ValueError(f"initial_c {initial_c} C outside {self.MIN_C}..{self.MAX_C} C")
        if not tau_s > 0:
            raise ValueError(f"tau_s must be positive, got {tau_s!r}")
        if not noise_c >= 0:
            raise ValueError(f"noise_c must be non-negative, got {noise_c!r}")
        self.initial_c = float(initial_c)
        self.tau_s = float(tau_s)
        self.ambient_c = float(ambient_c)
        self.noise_c = float(noise_c)
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._set_c = self.initial_c
        self._output = True
        self._temp_c = self.initial_c
        self._t_s = clock()

    def _advance(self) -> None:
        """Bring the modelled temperature up to now (lock held)."""
        now = self._clock()
        dt = now - self._t_s
        self._t_s = now
        if dt > 0:
            target = self._set_c if self._output else self.ambient_c
            self._temp_c = target + (self._temp_c - target) * math.exp(-dt / self.tau_s)

    def _reset(self) -> None:
        self._advance()
        self._set_c = self.initial_c
        self._output = True

    @property
    def set_point_c(self) -> float:
        """The set point in degC."""
        with self._lock:
            return self._set_c

    def temperature_c(self) -> float:
        """The DIMM temperature now, in degC, without sensor noise (what the emulated DIMM sees)."""
        with self._lock:
            self._advance()
            return self._temp_c

    def measured_temperature_c(self) -> float:
        """The temperature as the sensor reads it (with seeded noise), in degC."""
        with self._lock:
            self._advance()
            return self._temp_c + float(self._rng.uniform(-self.noise_c, self.noise_c))

    def _command(self, header: str, arg: str | None) -> str | None:
        with self._lock:
            if header == "TEMP:SET":
                value = in_range(parse_number(arg), self.MIN_C, self.MAX_C)
                self._advance()
                self._set_c = value
                return None
            if header in ("OUTP", "OUTP:STAT"):
                value = parse_bool(arg)
                self._advance()
                self._output = value
                return None
            if header.endswith("?"):
                no_arg(arg)
            if header == "TEMP:SET?":
                return f"{self._set_c:.3f}"
            if header == "MEAS:TEMP?":
                return f"{self.measured_temperature_c():.3f}"
            if header in ("OUTP?", "OUTP:STAT?"):
                return "1" if self._output else "0"
        raise undefined_header()
