"""`python -m tokenprune.zoo train-vlm|train-vlm2|train-lm --out DIR`: retrain a reference model from scratch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenprune.zoo", description=__doc__)
    parser.add_argument("model", choices=("train-vlm", "train-vlm2", "train-lm"))
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for the checkpoint (save_pretrained)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: the shipped run's)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)

    import torch

    from tokenprune.zoo import train

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = {} if args.steps is None else {"steps": args.steps}
    trainer = {"train-vlm": train.train_vlm, "train-vlm2": train.train_vlm2, "train-lm": train.train_lm}
    trainer[args.model](args.out, device=args.device, log=lambda m: print(m, flush=True), **steps)
    print(f"done in {time.perf_counter() - started:.0f}s; checkpoint in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
