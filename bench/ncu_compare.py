#!/usr/bin/env python3
"""Where a short problem's extra time goes: two ncu source-level profiles of one kernel compared.

A kernel that runs slower per key tile on short rows than on long ones spends the difference in
code that runs per work item (item starts, output writes, masked diagonal tiles), or runs its
per-tile code slower. With both problems profiled on the same build, each SASS instruction has an
execution count in both; instructions with the same pair of counts form one class (a basic block
or several). For each class this prints how many more warp instructions and warp-state samples
the short problem has than it would if it cost what the long one costs per key tile, so per-item
code stands out from per-tile code, and the total says whether the extra time is extra
instructions (the per-execution sample rates agree) or slower ones.

Profile (device): one forward per problem, the second call profiled, sources exported as CSV:

  ncu --section SourceCounters --launch-skip 1 --launch-count 1 -k regex:forward_kernel -o short \\
      python3 bench/profile_once.py --lib build/src/libfattn.so.0 --shape 64,1024,causal
  ncu -i short.ncu-rep --page source --csv --print-source sass > short.csv   (and the same for long)

Compare (anywhere): key tiles of each problem over all its work items (both sides' per-tile scale):

  python3 bench/ncu_compare.py short.csv 18432 long.csv 264192
"""
import argparse
import collections
import csv


def load(path):
    """[(offset, SASS text, samples, warp instructions executed, {stall reason: samples})]."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = next(i for i, row in enumerate(rows) if row and row[0] == "Address")
    names = rows[header]
    out, base = [], None
    for row in rows[header + 1:]:
        field = dict(zip(names, row))
        address = int(field["Address"], 16)
        base = address if base is None else base
        stalls = {name[len("stall_"):]: int(value) for name, value in field.items()
                  if name.startswith("stall_") and "(" not in name and value.isdigit()}
        out.append((address - base, field["Source"].strip(), int(field["Warp Stall Sampling (All Samples)"]),
                    int(field["Instructions Executed"]), stalls))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("short_csv")
    parser.add_argument("short_tiles", type=int)
    parser.add_argument("long_csv")
    parser.add_argument("long_tiles", type=int)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    short, long = load(args.short_csv), load(args.long_csv)
    if [i[1].split()[:1] for i in short] != [i[1].split()[:1] for i in long]:  # branch targets move
        raise SystemExit("the two profiles are of different code: profile one build")
    scale = args.short_tiles / args.long_tiles  # the long problem's counts, per key tile of the short one

    classes = collections.defaultdict(lambda: dict(size=0, samples=0, long_samples=0, stalls=collections.Counter(),
                                                   first=None))
    for s, l in zip(short, long):
        entry = classes[(s[3], l[3])]
        entry["size"] += 1
        entry["samples"] += s[2]
        entry["long_samples"] += l[2]
        entry["stalls"].update(s[4])
        entry["first"] = entry["first"] or s
    total_instructions = sum(i[3] for i in short)
    total_samples = sum(i[2] for i in short)
    print(f"short: {total_instructions / args.short_tiles:.0f} warp instructions and "
          f"{total_samples / args.short_tiles:.3f} samples per key tile; long: "
          f"{sum(i[3] for i in long) / args.long_tiles:.0f} and {sum(i[2] for i in long) / args.long_tiles:.3f}")
    at_long_rates = sum(e["long_samples"] * short_count / long_count
                        for (short_count, long_count), e in classes.items() if long_count)
    print(f"short's samples {total_samples}, at the long profile's samples per execution {at_long_rates:.0f}: "
          f"{'slower' if total_samples > at_long_rates * 1.05 else 'not slower'} per instruction executed")

    rows = []
    for (short_count, long_count), e in classes.items():
        extra_instructions = (short_count - long_count * scale) * e["size"]
        extra_samples = e["samples"] - e["long_samples"] * scale
        rows.append((extra_samples, extra_instructions, short_count, long_count, e))
    print(f"\n{'executions short/long':>22} {'size':>5} {'extra warp instr':>17} {'extra samples':>14}  "
          "top stalls (short)  first instruction")
    for extra_samples, extra_instructions, short_count, long_count, e in sorted(rows, key=lambda r: -abs(r[0]))[
            :args.top]:
        stalls = ",".join(f"{name}:{n}" for name, n in e["stalls"].most_common(2) if n)
        print(f"{short_count:>10}/{long_count:<11} {e['size']:>5} {extra_instructions / 1e6:>15.2f}M "
              f"{extra_samples:>8.0f} ({100 * extra_samples / total_samples:4.1f}%)  {stalls:<22} "
              f"{e['first'][0]:#07x} {e['first'][1][:40]}")
    print(f"\nextra in all: {sum(r[1] for r in rows) / 1e6:.2f}M warp instructions, "
          f"{sum(r[0] for r in rows):.0f} samples ({100 * sum(r[0] for r in rows) / total_samples:.1f}% of short's)")


if __name__ == "__main__":
    main()
