"""The emulated DIMM supply: a single-channel bench supply spoken to in SCPI (:class:`EmulatedSupply`)."""

from __future__ import annotations

from typing import Callable

from emubench.instruments.scpi import ScpiInstrument, in_range, no_arg, parse_bool, parse_number, undefined_header

__all__ = ["EmulatedSupply"]


class EmulatedSupply(ScpiInstrument):
    """An emulated single-channel bench supply feeding the DIMM's VDD.

    Commands (besides the common ones):

    ==================  ==================================================================
    ``VOLT <v>``        set point in V, 0..2.0 (outside: -222)
    ``VOLT?``           set point
    ``CURR <a>``        current limit in A, 0..5.0
    ``CURR?``           current limit
    ``OUTP ON|OFF|1|0`` output on/off; ``OUTP?`` answers 1/0
    ``MEAS:VOLT?``      output voltage: the set point when the output is on, else 0.0
    ``MEAS:CURR?``      load current ``load_current_fn(vdd_v)``, clipped to the limit
    ``STAT:QUES?``      questionable event register, cleared by reading and by ``*CLS``;
                        bit 1 (value 2) is set when a measurement found the supply
                        current-limiting
    ``STAT:QUES:COND?`` questionable condition register (2 while current-limiting)
    ==================  ==================================================================

    Current limiting is kept simple: the output voltage stays at the set point and
    the measured current is the limit.

    Parameters
    ----------
    nominal_v : float
        Power-on set point in V (also restored by ``*RST``).
    serial : str
        Serial number in the ``*IDN?`` reply.
    current_limit_a : float
        Power-on current limit in A.

    Attributes
    ----------
    load_current_fn : callable
        ``f(vdd_v) -> current_a``, the load the DIMM draws at a given output
        voltage; set it from the owner (e.g. the emulated DIMM with
        :func:`softmc_host.ddr3_power.interval_power`).  Called without the
        supply's lock held.  Defaults to no load.
    """

    MIN_V = 0.0
    MAX_V = 2.0
    MAX_CURRENT_A = 5.0
    #: Questionable status bit set while the output is current-limiting.
    QUES_CURRENT_LIMIT = 0x2

    def __init__(self, nominal_v: float = 1.35, serial: str = "PSU-0001", *, current_limit_a: float = 1.0) -> None:
        super().__init__("BENCH-PSU", serial)
        if not self.MIN_V <= nominal_v <= self.MAX_V:
            raise ValueError(f"nominal_v {nominal_v} V outside the supply's range {self.MIN_V}..{self.MAX_V} V")
        if not 0.0 <= current_limit_a <= self.MAX_CURRENT_A:
            raise ValueError(f"current_limit_a {current_limit_a} A outside 0..{self.MAX_CURRENT_A} A")
        self.nominal_v = float(nominal_v)
        self.default_current_limit_a = float(current_limit_a)
        self.load_current_fn: Callable[[float], float] = lambda vdd_v: 0.0
        self._set_v = self.nominal_v
        self._limit_a = self.default_current_limit_a
        self._output = True
        self._ques_event = 0
        self._ques_cond = 0

    def _reset(self) -> None:
        self._set_v = self.nominal_v
        self._limit_a = self.default_current_limit_a
        self._output = True
        self._ques_cond = 0

    def _clear_events(self) -> None:
        self._ques_event = 0

    @property
    def voltage_set_v(self) -> float:
        """The set point in V."""
        with self._lock:
            return self._set_v

    @property
    def output_enabled(self) -> bool:
        """Whether the output is on."""
        with self._lock:
            return self._output

    def output_voltage_v(self) -> float:
        """The voltage at the output terminals in V (what the emulated DIMM sees)."""
        with self._lock:
            return self._set_v if self._output else 0.0

    def measured_current_a(self) -> float:
        """The output current in A: the load at the present voltage, clipped to the limit.

        Updates the current-limiting bit of the questionable registers.
        """
        with self._lock:
            vdd_v, on, limit_a = self.output_voltage_v(), self._output, self._limit_a
        load_a = float(self.load_current_fn(vdd_v)) if on else 0.0
        limiting = load_a > limit_a
        with self._lock:
            if limiting:
                self._ques_cond |= self.QUES_CURRENT_LIMIT
                self._ques_event |= self.QUES_CURRENT_LIMIT
            else:
                self._ques_cond &= ~self.QUES_CURRENT_LIMIT
        return min(max(load_a, 0.0), limit_a)

    def _command(self, header: str, arg: str | None) -> str | None:
        with self._lock:
            if header == "VOLT":
                self._set_v = in_range(parse_number(arg), self.MIN_V, self.MAX_V)
                return None
            if header == "CURR":
                self._limit_a = in_range(parse_number(arg), 0.0, self.MAX_CURRENT_A)
                return None
            if header in ("OUTP", "OUTP:STAT"):
                self._output = parse_bool(arg)
                if not self._output:
                    self._ques_cond = 0
                return None
            if header.endswith("?"):
                no_arg(arg)
            if header == "VOLT?":
                return f"{self._set_v:.6f}"
            if header == "CURR?":
                return f"{self._limit_a:.6f}"
            if header in ("OUTP?", "OUTP:STAT?"):
                return "1" if self._output else "0"
            if header == "MEAS:VOLT?":
                return f"{self.output_voltage_v():.6f}"
            if header in ("STAT:QUES?", "STAT:QUES:EVEN?"):
                value, self._ques_event = self._ques_event, 0
                return str(value)
            if header == "STAT:QUES:COND?":
                return str(self._ques_cond)
        if header == "MEAS:CURR?":  # outside the lock: the load callback may read the supply
            return f"{self.measured_current_a():.6e}"
        raise undefined_header()
