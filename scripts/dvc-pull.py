#!/usr/bin/env python3
"""Fetch a run's outputs from the DVC remote and mark them up to date for Snakemake too.

    scripts/dvc-pull.py [dvc fetch arguments, e.g. -r myremote]

`dvc fetch` then `dvc checkout` (what `dvc pull` does) restore every out of dvc.lock: data,
results, figures and their *.run.json provenance records, but not their mtimes, so a plain
`snakemake` would rerun jobs; `snakemake --touch` then stamps the outputs in the DAG's order
(nothing is computed), after which `snakemake`, `make reproduce` and `dvc repro` have nothing
to do. DVC only warns when objects are missing (an unreachable remote looks the same to it):
here that is an error, in one line when nothing could be fetched and naming the outputs whose
objects are missing otherwise, and nothing in the workspace is changed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml


def lock_outs() -> dict[str, str]:
    """md5 (``.dir`` for a directory) -> path of every out in dvc.lock."""
    lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").is_file() else {}
    return {
        out["md5"]: out["path"]
        for stage in (lock or {}).get("stages", {}).values()
        for out in stage.get("outs", [])
        if "md5" in out
    }


def dir_entries(outs: dict[str, str]) -> dict[str, str]:
    """md5 -> path of each file of a directory out whose listing is in the local cache."""
    paths = {}
    for md5, out in outs.items():
        listing = Path(".dvc/cache/files/md5") / md5[:2] / md5[2:]
        if md5.endswith(".dir") and listing.is_file():
            for entry in json.loads(listing.read_text()):
                paths[entry["md5"]] = f"{out}/{entry['relpath']}"
    return paths


def main(argv: list[str]) -> int:
    fetch = subprocess.run(["dvc", "fetch", *argv], capture_output=True, text=True)
    log = fetch.stdout + fetch.stderr
    missing = re.findall(r"(?:md5: |failed to transfer ')([0-9a-f]{32}(?:\.dir)?)", log)
    if fetch.returncode != 0 or missing:
        lock = lock_outs()
        if lock and set(lock) <= set(missing):
            print(
                f"dvc-pull: none of the {len(lock)} outputs of dvc.lock could be fetched (remote "
                "unreachable, empty or not configured: see `dvc remote list`); nothing changed",
                file=sys.stderr,
            )
        elif missing:
            paths = lock | dir_entries(lock)
            for md5 in dict.fromkeys(missing):
                print(f"dvc-pull: missing {paths.get(md5, '?')} (md5 {md5})", file=sys.stderr)
            print("dvc-pull: the push was incomplete; nothing changed", file=sys.stderr)
        else:
            error = next((ln for ln in log.splitlines() if ln.startswith("ERROR")), log.strip())
            print(f"dvc-pull: dvc fetch failed: {error.removeprefix('ERROR: ')}", file=sys.stderr)
        return 1
    for cmd in (["dvc", "checkout", "--quiet"], ["snakemake", "--cores", "1", "--touch", "-q"]):
        if subprocess.run(cmd).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
