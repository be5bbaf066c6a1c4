#!/usr/bin/env python3
"""Goldens for segsweep-data's metric: mmseg 1.1.1 IoUMetric's formula on random label maps.

Restates `intersect_and_union` and `total_area_to_metrics` (mmseg/evaluation/metrics/
iou_metric.py) with torch.histc exactly as mmseg calls it, then derives the metrics in float64
so that the Rust side can be held to 1e-9. mmseg's own float32 result rounded to 2 decimals is
stored too (`mmseg_miou_rounded`), to show that the two agree at the precision mmseg reports.

Run by hand (never by CI):  python3 tests/reference/metric_goldens.py
Writes tests/fixtures/metric/goldens.json.
"""
import json
import os

import numpy as np
import torch

IGNORE = 255
OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "metric", "goldens.json")


def intersect_and_union(pred, label, num_classes, ignore_index):
    """mmseg's per-image histograms (float32 tensors, as torch.histc returns)."""
    mask = label != ignore_index
    pred = pred[mask]
    label = label[mask]
    intersect = pred[pred == label]
    hist = lambda x: torch.histc(x.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_intersect = hist(intersect)
    area_pred = hist(pred)
    area_label = hist(label)
    area_union = area_pred + area_label - area_intersect
    return area_intersect, area_union, area_pred, area_label


def metrics_f64(inter, union, pred, label):
    """total_area_to_metrics in float64, plus fwIoU; NaN where undefined."""
    inter, union, label = (np.asarray(x, dtype=np.float64) for x in (inter, union, label))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / label
    aacc = inter.sum() / label.sum() if label.sum() > 0 else np.nan
    freq = label / label.sum()
    valid = union > 0
    fwiou = float((freq[valid] * iou[valid]).sum())
    return {
        "miou_pct": float(np.nanmean(iou) * 100),
        "aacc_pct": float(aacc * 100),
        "macc_pct": float(np.nanmean(acc) * 100),
        "fwiou_pct": fwiou * 100,
        "iou_pct": [None if np.isnan(v) else float(v * 100) for v in iou],
        "acc_pct": [None if np.isnan(v) else float(v * 100) for v in acc],
    }


def make_case(rng, name, n_classes, shapes, gt_classes, pred_classes, p_ignore, p_copy):
    images = []
    for h, w in shapes:
        gt = rng.choice(gt_classes, size=(h, w)).astype(np.int64)
        pred = rng.choice(pred_classes, size=(h, w)).astype(np.int64)
        # Make predictions partly right so IoUs are not all near 1/C.
        copy = rng.random((h, w)) < p_copy
        pred[copy] = gt[copy]
        gt[rng.random((h, w)) < p_ignore] = IGNORE
        pred[gt == IGNORE] = rng.choice(pred_classes, size=int((gt == IGNORE).sum()))
        images.append({"h": h, "w": w, "pred": pred.ravel().tolist(), "gt": gt.ravel().tolist()})
    totals = [torch.zeros(n_classes) for _ in range(4)]
    totals64 = [np.zeros(n_classes, dtype=np.float64) for _ in range(4)]
    for im in images:
        p = torch.tensor(im["pred"]).reshape(im["h"], im["w"])
        g = torch.tensor(im["gt"]).reshape(im["h"], im["w"])
        parts = intersect_and_union(p, g, n_classes, IGNORE)
        for t, t64, part in zip(totals, totals64, parts):
            t += part
            t64 += part.double().numpy()
    inter, union, pred, label = totals64
    exp = metrics_f64(inter, union, pred, label)
    # mmseg's own float32 path, rounded as its summary table rounds.
    with np.errstate(divide="ignore", invalid="ignore"):
        iou32 = (totals[0] / totals[1]).numpy()
    exp["mmseg_miou_rounded"] = float(np.round(np.nanmean(iou32) * 100, 2))
    exp.update({k: [int(v) for v in arr] for k, arr in zip(("intersect", "union", "pred", "label"), totals64)})
    return {"name": name, "n_classes": n_classes, "ignore_index": IGNORE, "images": images, "expected": exp}


def main():
    rng = np.random.default_rng(0)
    cases = [
        make_case(rng, "c5_three_non_square", 5, [(13, 17), (7, 11), (9, 4)], np.arange(5), np.arange(5), 0.1, 0.5),
        # ids >= C in both maps (outside histc's range), classes 18-20 absent from labels.
        make_case(rng, "c21_out_of_range_ids", 21, [(16, 23), (11, 6)], np.arange(0, 24), np.arange(0, 26), 0.05, 0.4),
        # classes 4-7 only ever predicted: IoU 0, counted in mIoU; acc undefined.
        make_case(rng, "c8_predicted_only", 8, [(10, 15), (15, 10)], np.arange(4), np.arange(8), 0.0, 0.6),
        # class 2 absent from both maps: excluded from every mean.
        make_case(rng, "c3_absent_class", 3, [(5, 9)], np.array([0, 1]), np.array([0, 1]), 0.2, 0.5),
        make_case(rng, "c150_large", 150, [(31, 47), (40, 29), (23, 37)], np.arange(150), np.arange(150), 0.1, 0.3),
    ]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "tests/reference/metric_goldens.py", "torch": torch.__version__,
                   "numpy": np.__version__, "cases": cases}, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
