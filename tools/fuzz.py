"""Long fuzz run: every fuzz test of ``tests/test_fuzz_*.py``, fed many random inputs.

CI runs each fuzz test with a few hundred derandomized hypothesis examples. This script
drives the same tests through hypothesis' ``fuzz_one_input`` with seeded random byte
strings (hypothesis turns each into one generated input), so a long run needs no extra
test code and finds what CI's short runs would. Each failure's input bytes are saved, and
``--replay FILE`` runs one saved input again::

    python tools/fuzz.py                          # 100,000 inputs per fuzz test
    python tools/fuzz.py --inputs 2000 -k frame   # a quick look at the frame decoder
    python tools/fuzz.py --replay fuzz-failures/test_fuzz_link.test_fuzz_frame_decoder-17.bin

It prints one line per test (inputs, failures, seconds, inputs per second) and a Markdown
table at the end (``docs/fuzzing.md`` holds the last full run). Exit status 1 if any test
failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def fuzz_targets(pattern: str = "") -> list[tuple[str, Callable[[bytes], object]]]:
    """(name, fuzz_one_input) of every fuzz test whose ``module.function`` name contains ``pattern``."""
    for path in (str(ROOT), str(TESTS)):
        if path not in sys.path:
            sys.path.insert(0, path)
    targets = []
    for path in sorted(TESTS.glob("test_fuzz_*.py")):
        module = importlib.import_module(path.stem)
        for attr in sorted(vars(module)):
            test = getattr(module, attr)
            runner = getattr(getattr(test, "hypothesis", None), "fuzz_one_input", None)
            name = f"{path.stem}.{attr}"
            if attr.startswith("test_") and runner is not None and pattern in name:
                targets.append((name, runner))
    return targets


def run_target(
    name: str, runner: Callable[[bytes], object], inputs: int, seed: int, max_bytes: int,
    time_limit_s: float, failures_dir: Path, keep: int = 5,
) -> dict:
    """Feed ``inputs`` seeded random buffers to one test; return its counts."""
    rng = random.Random(f"{seed}:{name}")
    failures: list[str] = []
    started = time.perf_counter()
    done = 0
    for done in range(1, inputs + 1):
        size = min(max_bytes, int(rng.expovariate(1 / 256)) + 1)
        buffer = rng.randbytes(size)
        try:
            runner(buffer)
        except Exception as exc:  # a failing example: the test's own assertion or an escaped error
            kind = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            if len(failures) < keep:
                failures_dir.mkdir(parents=True, exist_ok=True)
                saved = failures_dir / f"{name}-{done}.bin"
                saved.write_bytes(buffer)
                print(f"  FAIL {name} input {done}: {kind} (saved {saved})", flush=True)
            failures.append(kind)
        if time.perf_counter() - started > time_limit_s:
            break
    seconds = time.perf_counter() - started
    return {"test": name, "inputs": done, "failures": len(failures), "seconds": seconds,
            "per_s": done / seconds if seconds else 0.0, "kinds": sorted(set(failures))}


def main(argv: list[str] | None = None) -> int:
    """Run the long fuzz; return the exit status."""
    parser = argparse.ArgumentParser(prog="python tools/fuzz.py", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per fuzz test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")
    parser.add_argument("-k", dest="pattern", default="", help="only tests whose module.function contains this")
    parser.add_argument("--max-bytes", type=int, default=8192, help="largest input buffer (default: %(default)s)")
    parser.add_argument("--time-limit-s", type=float, default=3600.0,
                        help="stop a test after this long, whatever its count (default: %(default)s)")
    parser.add_argument("--failures-dir", type=Path, default=Path("fuzz-failures"),
                        help="where failing inputs are saved (default: %(default)s)")
    parser.add_argument("--replay", type=Path, help="run one saved input (FILE named TEST-N.bin) and show its error")
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.max_bytes < 1 or not args.time_limit_s > 0:
        parser.error("--inputs, --max-bytes and --time-limit-s must be positive")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.replay is not None:
        name = args.replay.stem.rsplit("-", 1)[0]
        found = dict(fuzz_targets(name))
        if name not in found:
            parser.error(f"no fuzz test named {name!r}")
        try:
            found[name](args.replay.read_bytes())
        except Exception:
            traceback.print_exc()
            return 1
        print(f"{name}: input passes")
        return 0
    targets = fuzz_targets(args.pattern)
    if not targets:
        parser.error(f"no fuzz test matches {args.pattern!r}")
    results = []
    for name, runner in targets:
        result = run_target(name, runner, args.inputs, args.seed, args.max_bytes, args.time_limit_s,
                            args.failures_dir)
        results.append(result)
        print(f"{name}: {result['inputs']} inputs, {result['failures']} failures, "
              f"{result['seconds']:.0f} s ({result['per_s']:.0f}/s)", flush=True)
    print("\n| fuzz test | inputs | failures | seconds | inputs/s |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| `{r['test']}` | {r['inputs']} | {r['failures']} | {r['seconds']:.0f} | {r['per_s']:.0f} |")
    failed = [r for r in results if r["failures"]]
    for r in failed:
        print(f"{r['test']}: " + "; ".join(r["kinds"][:3]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
