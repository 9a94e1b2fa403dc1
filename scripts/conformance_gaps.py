"""Conformance of memsig's probes against scikit-learn for every view kind: tiny real runs
(the test suite's configs, larger probe parts), each audited with the reference fitted on the
whole fit block; prints every view x offset gap and the count beyond 0.01 accuracy / 0.03 bits.

    .venv/bin/python scripts/conformance_gaps.py [OUT_DIR]

tests/test_conformance.py asserts the kinds that meet these bounds; this script measures all."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import CONFORMANCE_DATA, compose_config  # noqa: E402
from memsig.commands.audit import audit_run  # noqa: E402
from memsig.pipeline.run import run  # noqa: E402

KINDS = {
    "lstm": ["probe.views=[layer1.h,layer1.c,logits]"],
    "gru": ["model=gru", "probe.views=[layer1.h,logits]"],
    "ngram": ["model=ngram", "model.order=3", "probe.views=[context,logits]"],
    "flstm": [
        "model=flstm",
        "model.bases=2",
        "model.rank=4",
        "probe.views=[layer1.basis1,layer1.basis2]",
    ],
}


def main(out: Path) -> None:
    for kind, overrides in KINDS.items():
        run_dir = out / kind
        if not (run_dir / "signature.json").exists():
            overrides = [*overrides, "probe.max_epochs=30", "logger=none", *CONFORMANCE_DATA]
            run(compose_config(run_dir, overrides))
        rows = audit_run(run_dir, 10**9)
        beyond = [r for r in rows if not r.passed(0.01, 0.03)]
        print(f"{kind}: {len(beyond)} of {len(rows)} view x offset beyond 0.01 acc / 0.03 bits")
        for r in rows:
            gaps = f"acc {r.accuracy_gap:+.4f}  xent {r.xent_gap:+.4f}"
            print(f"  {r.view:16} k={r.offset:3}  {gaps}{'  BEYOND' if r in beyond else ''}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="conformance-")))
