#!/usr/bin/env python3
"""The order of the Hopper kernels' asynchronous steps in their SASS, one line per kernel.

ptxas schedules within a basic block as it sees fit: it has hoisted a wgmma wait above the
softmax it was written after (bench/NOTES.md, twelfth session). This prints, per sm_90a kernel
whose name contains PATTERN, its instructions of interest in program order, runs compressed:

  G  HGMMA (a wgmma)            W<n>  WARPGROUP.DEPBAR.LE gsb0, n (wait until n groups remain)
  e  MUFU.EX2 (an exponential)  B     a branch
  s  STL (spill store)          l     LDL (spill load)

so `G16 W1 B14 W0 e66` reads: 16 wgmmas issued, wait for all but the last group, 14 branches,
wait for all, then 66 exponentials.

  python3 bench/sass_order.py build/src/CMakeFiles/fattn_objects.dir/__/cuda/inst/fwd_sm90_hdim128_bf16.cu.o
  python3 bench/sass_order.py build/src/libfattn.so.0 --pattern backward_kernel

Needs cuobjdump and nvdisasm (CUDA toolkit, or the nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm wheels) on PATH.
"""
import argparse
import re
import subprocess

INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;")


def event(instruction):
    """The one-letter kind of a SASS instruction, or None for the ones not shown."""
    if "HGMMA" in instruction:
        return "G"
    if "WARPGROUP.DEPBAR" in instruction and "gsb0" in instruction:
        return "W" + instruction.rsplit(",", 1)[-1].strip().removeprefix("0x")
    if "MUFU.EX2" in instruction:
        return "e"
    if re.search(r"\bBRA\b", instruction):
        return "B"
    if re.search(r"\bSTL\b", instruction):
        return "s"
    if re.search(r"\bLDL\b", instruction):
        return "l"
    return None


def compressed(kinds):
    runs = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    return " ".join(kind + (str(count) if count > 1 else "") for kind, count in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="an object file or libfattn.so built for sm_90a")
    parser.add_argument("--pattern", default="forward_kernel", help="part of the kernels' mangled names")
    args = parser.parse_args()
    dump = subprocess.run(["cuobjdump", "-sass", "-arch", "sm_90a", args.binary], capture_output=True, text=True,
                          check=True).stdout
    for function in re.split(r"\n\s*Function : ", dump)[1:]:
        name, body = function.split("\n", 1)
        if args.pattern not in name or "sm90" not in name:
            continue
        kinds = [event(m.group(1)) for m in INSTRUCTION.finditer(body)]
        print(name.strip())
        print("  " + compressed(kind for kind in kinds if kind))


if __name__ == "__main__":
    main()
