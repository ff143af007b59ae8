"""`make fuzz`: the context pruner's property (tests/_context_fuzz.py) on many generated pages.

    .venv/bin/python tests/fuzz_context.py [--cases 100000] [--workers 2] [--batch 500] [--seed 0]

Each worker runs batches of hypothesis-generated cases with its own seeds, recording every failure
(exception, hang past 10 CPU seconds, tokens over the budget) instead of stopping at the first. Prints the
number of cases and of failures, with each failure's error and a reproducer; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_batch(job: tuple[int, int, str]) -> tuple[int, list[str]]:
    from _context_fuzz import cases, check
    from hypothesis import HealthCheck, Phase, given, seed, settings

    batch_seed, size, keep = job
    done = 0
    failures: list[str] = []

    @seed(batch_seed)
    @settings(
        max_examples=size,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def property_(case) -> None:
        nonlocal done
        done += 1
        try:
            check(case)
        except Exception as error:  # every failure is recorded; the batch goes on
            where = traceback.extract_tb(error.__traceback__)[-1]
            saved = Path(keep) / f"case-{batch_seed}-{done}.pickle"
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(pickle.dumps(case))
            failures.append(
                f"{type(error).__name__}: {str(error)[:300]} at {where.filename}:{where.lineno}\n"
                f"    case {case!r:.300}\n    reproduce: check(pickle.loads(Path({str(saved)!r}).read_bytes()))"
            )

    property_()
    return done, failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=100_000, help="cases in all (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument(
        "--batch", type=int, default=500, help="cases per hypothesis run (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first batch (default: %(default)s)")
    parser.add_argument(
        "--failures", default="fuzz-failures", help="where failing cases are pickled (default: %(default)s)"
    )
    args = parser.parse_args()
    jobs = [
        (args.seed + index, min(args.batch, args.cases - start), args.failures)
        for index, start in enumerate(range(0, args.cases, args.batch))
    ]
    total, failures = 0, []
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=20) as pool:
        for done, batch_failures in pool.imap_unordered(run_batch, jobs):
            total += done
            failures += batch_failures
            for failure in batch_failures:  # as they come: a run stopped early keeps what it found
                print(failure, flush=True)
            print(
                f"{total} cases, {len(failures)} failures, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    print(f"fuzz: {total} cases, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
