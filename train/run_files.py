"""Where things are in a run folder: the newest complete checkpoint, and accelerate's custom objects by
name. `accelerator.save_state` writes registered objects as `custom_checkpoint_<i>.pkl` in registration
order; the trainer records `{name: file}` in each checkpoint's `train_complete.json` so readers (export,
resume tools) find e.g. the EMA by name, whatever else a phase registers."""

from __future__ import annotations

import csv
import json
from pathlib import Path



def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest `RUN/checkpoints/step_*` with a `train_complete.json` (written last), or None."""
    ck_dir = Path(run_dir) / "checkpoints"
    ck = sorted(ck_dir.glob("step_*")) if ck_dir.is_dir() else []
    ck = [c for c in ck if (c / "train_complete.json").is_file()]
    return ck[-1] if ck else None


def custom_object_files(names: list[str]) -> dict[str, str]:
    """Registration-ordered names → the files accelerate writes for them."""
    return {name: f"custom_checkpoint_{i}.pkl" for i, name in enumerate(names)}


def load_custom_object(checkpoint: str | Path, name: str) -> dict | None:
    """The state dict saved for the custom object `name` (e.g. "ema"), or None if the checkpoint has none.
    Checkpoints written before the name map existed: the EMA is the pickle holding a "shadow" entry."""
    from echomimic_core.checkpoints import read_checkpoint  # the one safe reader (weights_only, named errors)

    ck = Path(checkpoint)
    meta = json.loads((ck / "train_complete.json").read_text())
    files = meta.get("custom_objects")
    if files is not None:
        return read_checkpoint(ck / files[name]) if name in files else None
    if name != "ema":
        return None
    for f in sorted(ck.glob("custom_checkpoint_*.pkl")):
        sd = read_checkpoint(f)
        if isinstance(sd, dict) and "shadow" in sd:
            return sd
    return None


def truncate_log(path: Path, start: int, fields: list[str]) -> None:
    """Rewrite the run's log.csv keeping the rows up to ``start`` (a resumed run logs the rest again)."""
    rows = []
    if path.is_file() and start > 0:
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)


def append_log(path: Path, row: dict, fields: list[str]) -> None:
    """One row of the run's log.csv."""
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writerow({k: row.get(k) for k in fields})
