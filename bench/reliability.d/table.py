#!/usr/bin/env python3
"""Prints the reliability table from target/reliability/results.md and, with
--write-doc 1, replaces the generated part of docs/RELIABILITY.md (between
the `<!-- reliability-table:begin -->` and `<!-- reliability-table:end -->`
markers) with it, the command that produced it and the machine."""
import argparse
import os
import pathlib
import platform
import re

HEADER = ("| scenario | events sent | stored | dead-lettered | lost | duplicated | "
          "joined (expected/stored) | joined lost/extra | faults | recovery (max) | "
          "catch-up | peak RSS ingest / joiner |")
ALIGN = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
BEGIN, END = "<!-- reliability-table:begin -->", "<!-- reliability-table:end -->"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--command", required=True)
    ap.add_argument("--started", required=True)
    ap.add_argument("--elapsed", type=int, required=True)
    ap.add_argument("--status", type=int, required=True)
    ap.add_argument("--doc")
    ap.add_argument("--write-doc", type=int, default=1)
    a = ap.parse_args()

    rows, notes = [], []
    for line in pathlib.Path(a.results).read_text().splitlines():
        if line.startswith("| "):
            rows.append(line)
        elif line.startswith("<!-- ") and line.endswith(" -->"):
            notes.append(line[5:-4])
    load = os.getloadavg()
    text = "\n".join([
        f"Produced by `{a.command}` on {a.started}: {len(rows)} scenarios in "
        f"{a.elapsed // 60} min {a.elapsed % 60} s, "
        f"{'all passed' if a.status == 0 else 'SOME FAILED (see the cargo test output)'}; "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end, {platform.system()} "
        f"{platform.release()}.",
        "",
        HEADER,
        ALIGN,
        *rows,
        "",
        *(f"- {n}" for n in notes),
    ]).rstrip() + "\n"
    print(text)
    if a.doc and a.write_doc:
        doc = pathlib.Path(a.doc)
        body = doc.read_text()
        new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END),
                     lambda _: f"{BEGIN}\n{text}{END}", body, flags=re.S)
        doc.write_text(new)
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
