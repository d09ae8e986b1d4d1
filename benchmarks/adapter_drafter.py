"""Adapter drafter runs against the retrieval drafter and the baselines, on one corpus index.

    python benchmarks/adapter_drafter.py --manifest manifests/medpix2.csv --split dev \
        --run runs/adapter-medpix2 [--run runs/adapter-no-grounding ...] [-k 10] [--work DIR]

Drafts every row of ``--split`` (choose on dev; test only for the row reported once a run is chosen)
with ``retrieval``, ``nn-copy``, ``most-common`` and each trained run, all from the same corpus index
(the manifest's train rows, built once in ``--work``), and prints BLEU-1/4, METEOR, ROUGE-L, CIDEr,
finding F1 and seconds per draft, with each run's difference to ``retrieval``. The training command
of a run and its kept epoch are in its ``history.json`` (see docs/drafting.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radsearch.drafting import create_drafter
from radsearch.training.report_eval import evaluate_report_drafting, report_task

BASELINES = ("retrieval", "nn-copy", "most-common")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--run", type=Path, action="append", default=[])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--model", default="radclip-mini")
    parser.add_argument("--json", type=Path, help="Also write the results here")
    args = parser.parse_args()
    drafters = [create_drafter(name) for name in BASELINES] + [create_drafter(str(r)) for r in args.run]
    task = report_task([args.manifest], args.split, corpus_split="train")
    results = evaluate_report_drafting(task, drafters, args.k, args.model, args.work, log=print)
    reference = next(r for r in results if r["drafter"] == "retrieval")
    print(f"{args.manifest.stem} {args.split}: {results[0]['n']} drafted from {results[0]['corpus']}, "
          f"k={args.k}")
    for r in results:
        meteor = "n/a" if r["METEOR"] is None else f"{r['METEOR']:.3f}"
        line = (f"{Path(r['drafter']).name:24s} BLEU-1 {r['BLEU-1']:.3f} BLEU-4 {r['BLEU-4']:.3f} "
                f"METEOR {meteor} ROUGE-L {r['ROUGE-L']:.3f} CIDEr {r['CIDEr']:.3f} F1 "
                f"{r['finding_F1']['micro']:.3f}/{r['finding_F1']['macro']:.3f} "
                f"{r['seconds_per_draft']:.3f} s/draft")
        if r["drafter"] not in BASELINES:
            line += (f"  vs retrieval: BLEU-4 {r['BLEU-4'] - reference['BLEU-4']:+.3f} ROUGE-L "
                     f"{r['ROUGE-L'] - reference['ROUGE-L']:+.3f} F1 "
                     f"{r['finding_F1']['micro'] - reference['finding_F1']['micro']:+.3f}, "
                     f"{r['seconds_per_draft'] / reference['seconds_per_draft']:.0f}x the time")
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
