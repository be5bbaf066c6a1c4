#!/usr/bin/env bash
# Regenerate every golden fixture from the project's PyTorch / numpy references (`just fixtures`).
# Never run by CI. Needs: torch, transformers, numpy, scipy, scikit-learn, opencv-python-headless,
# pydensecrf2 (DenseCRF goldens), and `pip install --no-deps open_clip_torch==3.3.0 ftfy wcwidth`
# (token goldens). Each script is deterministic (seeded) and rewrites only its own fixture folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=tests/reference
python3 $R/make_tiny_clip.py                 # tests/fixtures/{tiny-clip,clip}/ (the others load tiny-clip)
python3 $R/sclip_reference.py                # tests/fixtures/sclip/
python3 $R/pamr_resclip_reference.py all     # tests/fixtures/{pamr,resclip}/
python3 $R/cliptrase_cliprc_reference.py     # tests/fixtures/{cliptrase,clip-rc}/
python3 $R/loftup_reference.py               # tests/fixtures/loftup/
python3 $R/densecrf_goldens.py               # tests/fixtures/densecrf/
python3 $R/metric_goldens.py                 # tests/fixtures/metric/
python3 $R/context_mat_fixture.py            # crates/data/tests/fixtures/ (Pascal Context .mat)
for s in crates/data/tests/fixtures/*.py; do [ -f "$s" ] && python3 "$s"; done
git status --short tests/fixtures crates/data/tests/fixtures
