#!/usr/bin/python3
"""Feeds every vector of borg-arguments.json to the client guard (contrib/guard/borg-relay-guard):
its grammar (parse_borg_arguments) and the check of a whole borg command (check_borg, with a
restore directory for the restore shape). Prints each mismatch; exit 1 if there is one.
Run by RelayCoreTests (BorgArgumentsTests), which checks the same vectors against BorgArguments.swift.

usage: check-guard.py [GUARD] [VECTORS]"""
import importlib.machinery
import importlib.util
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
guard_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../../contrib/guard/borg-relay-guard")
vectors_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "borg-arguments.json")

loader = importlib.machinery.SourceFileLoader("borg_relay_guard", guard_path)
spec = importlib.util.spec_from_loader("borg_relay_guard", loader)
guard = importlib.util.module_from_spec(spec)
loader.exec_module(guard)

with open(vectors_path, encoding="utf-8") as f:
    vectors = json.load(f)
cfg = {"path": [], "restore-to": ["/var/tmp"], "hook": [], "borg": "borg", "dac-read-search": None}
mismatches = []
for n, v in enumerate(vectors):
    argv, restore = v["argv"], v.get("restore", False)
    try:
        normalised = guard.parse_borg_arguments(argv, restore=restore)
        refusal = None
    except guard.Refused as e:
        normalised, refusal = None, str(e)
    # The whole command, as the guard sees it after the env prefix.
    try:
        guard.check_borg(["borg"] + argv, cfg, "/var/tmp/r" if restore else None)
        whole = None
    except guard.Refused as e:
        whole = str(e)
    where = f"vector {n} {json.dumps(argv, ensure_ascii=False)}{' (restore)' if restore else ''}"
    if v["allowed"]:
        if refusal is not None:
            mismatches.append(f"{where}: expected allowed, refused: {refusal}")
        elif whole is not None:
            mismatches.append(f"{where}: the grammar allows it, check_borg refused: {whole}")
        else:
            # The normalised argv means the same and passes again, unchanged.
            again = guard.parse_borg_arguments(normalised, restore=restore)
            if again != normalised:
                mismatches.append(f"{where}: normalised {normalised} re-parses as {again}")
    else:
        if refusal is None:
            mismatches.append(f"{where}: expected refused ({v['why']}), allowed as {normalised}")
        elif v["why"] not in refusal:
            mismatches.append(f"{where}: refused, but the reason lacks {v['why']!r}: {refusal}")
        if whole is None:
            mismatches.append(f"{where}: check_borg allowed it")
for m in mismatches:
    print(m)
print(f"{len(vectors)} vectors, {len(mismatches)} mismatches")
sys.exit(1 if mismatches else 0)
