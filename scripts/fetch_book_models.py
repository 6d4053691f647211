#!/usr/bin/env python
"""Download the book's two LUNA16-trained checkpoints (Deep Learning with PyTorch, part 2) from
the book's GitHub repository (deep-learning-with-pytorch/dlwpt-code, data/part2/models/), check
their SHA-256 digests and put them in the user's model directory, where `lungview detect` and
the viewer find them before the demo models.

    python scripts/fetch_book_models.py [--from DIR] [--dest DIR]

--from copies from a local folder instead (an offline mirror, or ../shared/models/book).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

from lungview.core.atomic import atomic_path
from lungview.models.checkpoint import file_sha256
from lungview.models.registry import user_model_dir

BASE_URL = "https://github.com/deep-learning-with-pytorch/dlwpt-code/raw/master/data/part2/models/"
CHECKPOINTS = {
    "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state":
        "cb3291697a78d99d347054d9236f43e6acd79646861864b03fc109af38ba88fb",
    "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state":
        "0f2af10e3bb0f5159cb6ea0df97a2d9f4ac824e28d18a3f18746f39de5bb0727",
}


def fetch(name: str, digest: str, dest: Path, source: Path | None) -> Path:
    target = dest / name
    if target.exists() and file_sha256(target) == digest:
        print(f"ok       {target} (already there, digest matches)")
        return target
    with atomic_path(target, suffix=".part") as tmp:
        if source is not None:
            shutil.copyfile(source / name, tmp)
        else:
            with urllib.request.urlopen(BASE_URL + name, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        got = file_sha256(tmp)
        if got != digest:
            raise ValueError(f"{name}: SHA-256 {got} does not match the published {digest}")
    print(f"fetched  {target}")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", type=Path, help="copy from this folder instead of downloading")
    ap.add_argument("--dest", type=Path, default=user_model_dir() / "book")
    args = ap.parse_args(argv)
    try:
        for name, digest in CHECKPOINTS.items():
            fetch(name, digest, args.dest, args.source)
    except (OSError, ValueError) as exc:
        print(f"fetch_book_models: error: {exc}", file=sys.stderr)
        return 2
    print(f"LungView now uses these for `lungview detect` and the viewer (models in {args.dest.parent}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
