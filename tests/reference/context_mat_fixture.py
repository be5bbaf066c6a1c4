"""Tiny MATLAB v5 fixtures shaped like PASCAL Context's official `trainval/<id>.mat`.

Writes, with scipy.io.savemat (zlib-compressed elements, as the official release uses):
  crates/data/tests/fixtures/context/2008_000002.mat   LabelMap uint16 (5, 7), plus a decoy
                                                       variable `Other` (double) before it
  crates/data/tests/fixtures/context/big_ids.mat       LabelMap uint16 (3, 4), twelve distinct
                                                       ids, 458 (> 255) last, so a transposed
                                                       or 8-bit read shows
The Rust test (crates/data/tests/prepare_context.rs) rebuilds the same matrices from the same
rule, value (y, x) = IDS[(y * w + x) % len(IDS)], so the fixture is checked, not trusted.

Run by hand from the repository root: python3 tests/reference/context_mat_fixture.py
"""

from pathlib import Path

import numpy as np
import scipy.io

# Official 459-class ids: 0 unlabeled, ids in the 59-subset (2 aeroplane, 284 person,
# 458 wood, 115 door), ids outside it (1 accordion, 3, 300, 459).
IDS = [0, 2, 284, 1, 458, 115, 3, 300, 459, 22]

OUT = Path("crates/data/tests/fixtures/context")


def label_map(h, w, ids):
    return np.array(
        [[ids[(y * w + x) % len(ids)] for x in range(w)] for y in range(h)], dtype=np.uint16
    )


def fixed_header(path):
    """savemat writes the time into the 116-byte text header; write a fixed text there instead,
    so that regenerating the fixtures gives the same bytes."""
    data = bytearray(path.read_bytes())
    text = b"MATLAB 5.0 MAT-file, Platform: segsweep fixture, Created on: (fixed)"
    data[:116] = text.ljust(116, b" ")
    path.write_bytes(bytes(data))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        OUT / "2008_000002.mat",
        {"Other": np.arange(6.0).reshape(2, 3), "LabelMap": label_map(5, 7, IDS)},
        do_compression=True,
        format="5",
    )
    scipy.io.savemat(
        OUT / "big_ids.mat",
        {"LabelMap": label_map(3, 4, [0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 458])},
        do_compression=True,
        format="5",
    )
    for p in sorted(OUT.glob("*.mat")):
        fixed_header(p)
        m = scipy.io.loadmat(p)["LabelMap"]
        print(p, m.dtype, m.shape, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
