#!/usr/bin/env python3
"""Assemble a second, independent corpus as JSON lines, to check demo settings off the demo.

Four domains from sources the demo corpus never reads:

| label | source |
|---|---|
| Github | Python sources of the venv's site-packages (test suites excluded) |
| StackExchange | docstrings of those site-packages modules, one document per module |
| Ubuntu IRC | man pages (``<share>/man/man{1,5,8}``, roff stripped) |
| Debian changelogs | ``<share>/doc/*/changelog.Debian.gz`` |

Each line is ``{"text": ..., "meta": {"pile_set_name": label}}``, what ``data.source: jsonl``
reads (config/second.yaml). Candidates are taken in the order of a seeded hash of their path,
so the file is deterministic for a given machine; it does depend on the host's /usr/share and
the installed packages, which is fine for a robustness check and why it is not the demo.

    python scripts/second-corpus.py --out data/second-corpus.jsonl --per-domain 450
"""

from __future__ import annotations

import argparse
import json
import sysconfig
from pathlib import Path

from testtime.corpus.demo import _man_page, _walk, module_docstrings, read_text
from testtime.corpus.split import MIN_DOC_CHARS, seeded_hash
from testtime.io import write_text


def candidates(share: Path) -> dict[str, list[tuple[str, Path, object]]]:
    site = Path(sysconfig.get_paths()["purelib"])
    code = _walk(site, "*.py")
    man = [p for s in ("man1", "man5", "man8") for p in sorted((share / "man" / s).glob("*"))]
    return {
        "Github": [(str(p.relative_to(site)), p, read_text) for p in code],
        "StackExchange": [(str(p.relative_to(site)), p, module_docstrings) for p in code],
        "Ubuntu IRC": [(str(p.relative_to(share)), p, _man_page) for p in man if p.is_file()],
        "Debian changelogs": [
            (str(p.relative_to(share)), p, read_text)
            for p in sorted((share / "doc").glob("*/changelog.Debian.gz"))
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    parser.add_argument("--per-domain", type=int, default=450, help="documents per domain")
    parser.add_argument("--share", default="/usr/share", help="system share directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = []
    for domain, items in candidates(Path(args.share)).items():
        taken, seen = 0, set()
        for _name, path, load in sorted(items, key=lambda c: seeded_hash(args.seed, domain, c[0])):
            text = load(path)
            if not text or len(text.strip()) < MIN_DOC_CHARS or text in seen:
                continue
            seen.add(text)
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": domain}}))
            taken += 1
            if taken == args.per_domain:
                break
        print(f"{domain}: {taken} documents of {len(items)} candidates")
    write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
