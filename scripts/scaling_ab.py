"""Two-thread scaling of pooled allocate+drop vs bytearray, interleaved; optionally A/B against older code.

Usage (free-threaded, from the repository root):

    scripts/pythons.sh run 3.13t python scripts/scaling_ab.py 16
    scripts/pythons.sh run 3.13t python scripts/scaling_ab.py 16 --base old_src   # old_src/iobuf = code to compare

Each cell (`python -m iobuf.bench --cell`, 64 KiB, target 40 ms, 5 repeats) runs in a fresh
process; all cells run once per round, in shuffled order. Prints, per variant, the one-thread
median and for lockstep and staggered: agg (2 x median one-thread ns / median two-thread ns),
paired (median of per-round ratios) and best (fastest round of each cell), then the raw
per-round medians as JSON. On a shared machine read all three: they disagree when it is noisy.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys

parser = argparse.ArgumentParser()
parser.add_argument("rounds", type=int)
parser.add_argument("--base", help="directory holding an older iobuf package, run via PYTHONPATH")
parser.add_argument("--size", type=int, default=65536)
args = parser.parse_args()

variants = [("pooled", "main"), ("bytearray", "main")]
if args.base:
    variants.insert(0, ("pooled", "base"))
patterns = ((1, "single"), (2, "lockstep"), (2, "staggered"))
cells = [(a, v, th, pat) for a, v in variants for th, pat in patterns]
res: dict[tuple[str, str, str], list[float]] = {}
for _ in range(args.rounds):
    random.shuffle(cells)
    for a, v, th, pat in cells:
        env = dict(os.environ, PYTHONHASHSEED="0")
        if v == "base":
            env["PYTHONPATH"] = os.path.abspath(args.base)
        spec = {"kind": "alloc", "approach": a, "size": args.size, "touch": False, "threads": th}
        spec |= {"pattern": pat, "target_ms": 40, "repeats": 5}
        out = subprocess.run(
            [sys.executable, "-m", "iobuf.bench", "--cell", json.dumps(spec)],
            capture_output=True, text=True, check=True, env=env,
        )
        res.setdefault((a, v, pat), []).append(statistics.median(json.loads(out.stdout)["samples_ns"]))
for a, v in variants:
    single = res[(a, v, "single")]
    line = f"{a:9s} {v:4s} 1T {statistics.median(single):7.1f} ns"
    for pat in ("lockstep", "staggered"):
        two = res[(a, v, pat)]
        agg = 2 * statistics.median(single) / statistics.median(two)
        paired = statistics.median(2 * s / t for s, t in zip(single, two))
        best = 2 * min(single) / min(two)
        line += f" | {pat} agg {agg:.2f}x paired {paired:.2f}x best {best:.2f}x"
    print(line)
print(json.dumps({"/".join(k): v for k, v in res.items()}))
