#!/usr/bin/env python3
"""Checks that the C units of c_src/ depend on each other one way only.

LAYERS lists the units from the top (the NIF layer) to the bottom; a unit
may use units below it, never one above it, so there is no cycle.  Two
kinds of dependency are checked:
  - links: every symbol an object file (from `make compile`, in
    _build/nif/obj/) leaves undefined and another object defines;
  - includes: every project header a .c or .h file includes (a header
    belongs to the unit of its name; pool.h, pool_internal.h and
    executor.h to the unit named below).
Prints each dependency that goes upward, and exits 1 if there is one.
Usage: scripts/layers.py [-v] [objdir]   (`make lint` runs it; -v lists
every unit's dependencies)
"""
import os
import re
import subprocess
import sys

# Top to bottom.  Units on one line are one layer's files, in their own
# order (the left one may use the right one, not the reverse).
LAYERS = [
    ["nif"],                                             # NIF layer
    ["pool", "watchdog", "callback", "worker", "reply", "metrics", "queue"],  # pool
    ["exec_isolated", "exec_subinterp", "exec_thread"],  # executors
    ["py_exec", "py_stream", "py_channel", "py_erlang_mod"],  # Python-side code
    ["py_etf", "py_error", "py_convert", "py_buffer", "py_pid", "py_interp"],  # conversion
    ["job"],                                             # the request object
    ["py_runtime"],                                      # the interpreter
    ["atoms"],                                           # leaf
]
HEADER_UNIT = {"pool": "queue", "pool_internal": "queue", "executor": "exec_thread",
               "py_compat": "atoms"}  # header-only leaf

ORDER = [u for layer in LAYERS for u in layer]
RANK = {u: i for i, u in enumerate(ORDER)}

def unit_of_header(name):
    base = name[:-2]
    return HEADER_UNIT.get(base, base)

def link_deps(objdir):
    defined, undefined = {}, {}
    for f in sorted(os.listdir(objdir)):
        if not f.endswith(".o"):
            continue
        unit = f[:-2]
        out = subprocess.run(["nm", os.path.join(objdir, f)], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "U":
                undefined.setdefault(unit, set()).add(parts[1])
            elif len(parts) == 3 and parts[1] in "TDBRCVW":
                defined[parts[2]] = unit
    deps = []
    for unit, syms in undefined.items():
        for s in sorted(syms):
            if s in defined and defined[s] != unit:
                deps.append((unit, defined[s], "uses " + s))
    return deps

def include_deps(srcdir):
    deps = []
    for f in sorted(os.listdir(srcdir)):
        if not f.endswith((".c", ".h")):
            continue
        unit = unit_of_header(f) if f.endswith(".h") else f[:-2]
        with open(os.path.join(srcdir, f)) as fh:
            for m in re.finditer(r'^#include "([\w.]+)"', fh.read(), re.M):
                dep = unit_of_header(m.group(1))
                if dep != unit:
                    deps.append((unit, dep, f + " includes " + m.group(1)))
    return deps

def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcdir = os.path.join(root, "c_src")
    args = [a for a in sys.argv[1:] if a != "-v"]
    objdir = args[0] if args else os.path.join(root, "_build/nif/obj")
    units = {f[:-2] for f in os.listdir(srcdir) if f.endswith(".c")}
    bad = []
    for u in sorted(units - set(RANK)):
        bad.append("unit %s is not placed in LAYERS (scripts/layers.py)" % u)
    deps = link_deps(objdir) + include_deps(srcdir)
    for frm, to, why in deps:
        if frm not in RANK or to not in RANK:
            continue
        if RANK[frm] > RANK[to]:
            bad.append("%s -> %s (upward): %s" % (frm, to, why))
    if "-v" in sys.argv:
        for frm in ORDER:
            tos = sorted({t for f, t, _ in deps if f == frm and t != frm}, key=RANK.get)
            print("  %-14s -> %s" % (frm, " ".join(tos)))
    for line in bad:
        print("  " + line)
    pairs = {(f, t) for f, t, _ in deps if f in RANK and t in RANK}
    print("    %d units, %d dependencies, %s" % (len(units), len(pairs),
          "all downward" if not bad else "%d problems" % len(bad)))
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
