#!/usr/bin/env python3
"""Paired medians of an ab_cuda.py JSON file: per row, the median over rounds of each build's
ratio to the first build (same round), and how many rounds it won.

  python3 bench/paired.py $OUT/ab-fwd.json      (or a bench/results/ab-*.jsonl file)
"""
import json, statistics, sys
for line in open(sys.argv[1]):
    run = json.loads(line)
    for r in run["results"]:
        t = r["tflops"]
        names = list(t)
        base = names[0]
        cells = []
        for name in names[1:]:
            ratios = [a / b for a, b in zip(t[name], t[base])]
            wins = sum(x > 1 for x in ratios)
            cells.append(f"{name} {100 * (statistics.median(ratios) - 1):+5.1f}% ({wins}/{len(ratios)})")
        print(f"{r['dtype']} {r['direction']} D={r['head_dim']} N={r['seqlen']}{' causal' if r['causal'] else ''}: "
              f"{base} {statistics.median(t[base]):.1f}  " + "  ".join(cells))
