"""PASCAL VOC evaluation: hand-made cases with values worked out by hand, and random cases against a plain
re-implementation of the MATLAB devkit's loop written here (no code shared with fastrcnn_cli.evaluation)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from fastrcnn_cli.cli.render_eval import map_text, plot_precision_recall, render_table
from fastrcnn_cli.detections import Detections, load_detections, save_detections
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.evaluation import average_precision, evaluate_voc, headline_for

TOL = 1e-6


@dataclass
class GT:
    """The fields of an ImageRecord that evaluation reads."""

    id: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def gt(image_id: str, objects: list[tuple] = ()) -> GT:
    """objects: (x1, y1, x2, y2, label[, difficult])"""
    if not objects:
        return GT(image_id)
    return GT(
        image_id,
        np.array([o[:4] for o in objects], np.float32),
        np.array([o[4] for o in objects], np.int64),
        np.array([bool(o[5]) if len(o) > 5 else False for o in objects], bool),
    )


def det(image_id: str, rows: list[tuple] = ()) -> Detections:
    """rows: (x1, y1, x2, y2, score, label)"""
    if not rows:
        return Detections.empty(image_id)
    a = np.array(rows, np.float64)
    return Detections(image_id, a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


A = (0, 0, 9, 9)  # 10 x 10 pixels with the +1 convention
B = (20, 20, 39, 29)
C = (50, 0, 59, 19)


# --------------------------------------------------------------------------------------------------
# the independent reference: the devkit's VOCevaldet / VOCap, as plain loops
# --------------------------------------------------------------------------------------------------


def _overlap(bb, bbgt) -> float:
    ix1, iy1 = max(bb[0], bbgt[0]), max(bb[1], bbgt[1])
    ix2, iy2 = min(bb[2], bbgt[2]), min(bb[3], bbgt[3])
    iw, ih = ix2 - ix1 + 1, iy2 - iy1 + 1
    if iw > 0 and ih > 0:
        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
        return iw * ih / ua
    return -math.inf


def _matlab_max(a: float, b: float) -> float:
    """MATLAB's max: NaN loses."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def reference_class(dets, gts, cls):
    """(ap07, ap_area, tp, fp, npos) for one class, the devkit's way (ignored detections kept as 0/0)."""
    records = {}
    npos = 0
    for g in gts:
        objs = [(list(map(float, b)), bool(d)) for b, l, d in zip(g.boxes, g.labels, g.difficult) if l == cls]
        records[g.id] = {"bb": [o[0] for o in objs], "diff": [o[1] for o in objs], "det": [False] * len(objs)}
        npos += sum(1 for o in objs if not o[1])
    order = {g.id: i for i, g in enumerate(gts)}
    flat = []
    for d in sorted(dets, key=lambda d: order[d.image_id]):  # a results file written in image-set order
        for b, s, l in zip(d.boxes, d.scores, d.labels):
            if l == cls:
                flat.append((d.image_id, [float(v) for v in b], float(s)))
    flat.sort(key=lambda x: -x[2])  # Python's sort is stable, like MATLAB's
    tp, fp = [], []
    for image_id, bb, _ in flat:
        r = records[image_id]
        ovmax, jmax = -math.inf, -1
        for j, bbgt in enumerate(r["bb"]):
            ov = _overlap(bb, bbgt)
            if ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if not r["diff"][jmax]:
                if not r["det"][jmax]:
                    tp.append(1), fp.append(0)
                    r["det"][jmax] = True
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(0)
        else:
            tp.append(0), fp.append(1)
    ctp, cfp, rec, prec = 0, 0, [], []
    for t, f in zip(tp, fp):
        ctp, cfp = ctp + t, cfp + f
        rec.append(ctp / npos if npos else math.nan)
        prec.append(ctp / (ctp + cfp) if ctp + cfp else math.nan)
    if npos == 0:
        return math.nan, math.nan, ctp, cfp, npos
    ap07 = 0.0
    for k in range(11):
        ps = [p for r, p in zip(rec, prec) if r >= k / 10 and not math.isnan(p)]
        ap07 += (max(ps) if ps else 0.0) / 11
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = _matlab_max(mpre[i], mpre[i + 1])
    ap_area = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    return ap07, ap_area, ctp, cfp, npos


def assert_matches_reference(dets, gts, classes):
    result = evaluate_voc(dets, gts, classes)
    for c, name in enumerate(classes):
        ap07, ap_area, tp, fp, npos = reference_class(dets, gts, c)
        got = result[name]
        assert (got.tp, got.fp, got.num_positives) == (tp, fp, npos), name
        if npos == 0:
            assert math.isnan(got.ap_voc07) and math.isnan(got.ap_area)
        else:
            assert got.ap_voc07 == pytest.approx(ap07, abs=TOL), name
            assert got.ap_area == pytest.approx(ap_area, abs=TOL), name
    return result


# --------------------------------------------------------------------------------------------------
# hand-made cases
# --------------------------------------------------------------------------------------------------


def test_perfect_detections_give_ap_one():
    gts = [gt("a", [(*A, 0), (*B, 0)]), gt("b", [(*C, 0)])]
    dets = [det("a", [(*A, 0.9, 0), (*B, 0.8, 0)]), det("b", [(*C, 0.7, 0)])]
    r = assert_matches_reference(dets, gts, ["x"])
    assert r["x"].ap_voc07 == pytest.approx(1.0, abs=TOL)
    assert r["x"].ap_area == pytest.approx(1.0, abs=TOL)
    assert r.map == pytest.approx(1.0, abs=TOL)
    assert (r["x"].tp, r["x"].fp, r["x"].recall, r["x"].precision) == (3, 0, 1.0, 1.0)


def test_false_positive_ranked_first_costs_precision():
    # ranked: FP, TP, TP over 2 positives -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1; envelope 2/3 everywhere
    gts = [gt("a", [(*A, 0), (*B, 0)])]
    dets = [det("a", [(*C, 0.9, 0), (*A, 0.8, 0), (*B, 0.7, 0)])]
    r = assert_matches_reference(dets, gts, ["x"])
    assert r["x"].ap_voc07 == pytest.approx(2 / 3, abs=TOL)
    assert r["x"].ap_area == pytest.approx(2 / 3, abs=TOL)
    np.testing.assert_allclose(r["x"].precision_curve, [0, 1 / 2, 2 / 3])
    np.testing.assert_allclose(r["x"].recall_curve, [0, 1 / 2, 1])


def test_duplicate_detection_is_a_false_positive_and_the_metrics_differ():
    # ranked: TP(A), duplicate of A, TP(B): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # area = 1/2 * 1 + 1/2 * 2/3 = 5/6;  11-point = (6 * 1 + 5 * 2/3) / 11 = 28/33
    gts = [gt("a", [(*A, 0), (*B, 0)])]
    dets = [det("a", [(*A, 0.9, 0), (0, 0, 9, 8, 0.8, 0), (*B, 0.7, 0)])]
    r = assert_matches_reference(dets, gts, ["x"])
    assert (r["x"].tp, r["x"].fp) == (2, 1)
    assert r["x"].ap_area == pytest.approx(5 / 6, abs=TOL)
    assert r["x"].ap_voc07 == pytest.approx(28 / 33, abs=TOL)


def test_best_overlap_already_taken_is_a_false_positive_even_if_another_box_overlaps():
    # the devkit takes the box of maximum overlap and only then checks it: the second detection's best box
    # (A, IoU 1) is taken, so it is a false positive although it overlaps A2 with IoU 2/3
    a2 = (2, 0, 11, 9)
    gts = [gt("a", [(*A, 0), (*a2, 0)])]
    dets = [det("a", [(*A, 0.9, 0), (*A, 0.8, 0)])]
    r = assert_matches_reference(dets, gts, ["x"])
    assert (r["x"].tp, r["x"].fp) == (1, 1)
    assert r["x"].recall == pytest.approx(0.5)


def test_detections_on_difficult_boxes_are_ignored():
    # D is difficult; detections whose best match is D (even the second one, and one that also overlaps the
    # non-difficult box E >= 0.5 but D more) are neither TP nor FP; D is not a positive
    d_box, e_box = (0, 0, 9, 9), (0, 0, 9, 14)  # IoU(D, E) = 100 / 150
    gts = [gt("a", [(*d_box, 0, True), (*B, 0)]), gt("b", [(*e_box, 0), (*d_box, 0, True)])]
    dets = [
        det("a", [(*d_box, 0.95, 0), (*d_box, 0.94, 0), (*B, 0.9, 0), (*C, 0.5, 0)]),
        det("b", [(*d_box, 0.93, 0)]),
    ]
    r = assert_matches_reference(dets, gts, ["x"])
    x = r["x"]
    assert (x.num_positives, x.num_difficult, x.num_detections) == (2, 2, 5)
    assert (x.tp, x.fp, x.ignored) == (1, 1, 3)
    # counted: TP(B) 0.9, FP(C) 0.5 -> precision 1, 1/2 at recall 1/2, 1/2
    assert x.ap_area == pytest.approx(0.5, abs=TOL)
    assert x.ap_voc07 == pytest.approx(6 / 11, abs=TOL)


def test_class_with_no_detections_has_ap_zero_and_class_without_positives_is_nan_and_left_out():
    gts = [gt("a", [(*A, 0), (*B, 1), (*C, 2, True)])]
    dets = [det("a", [(*A, 0.9, 0)])]
    r = assert_matches_reference(dets, gts, ["x", "y", "z"])
    assert r["y"].ap_voc07 == 0.0 and r["y"].ap_area == 0.0 and r["y"].recall == 0.0
    assert r["y"].num_detections == 0 and math.isnan(r["y"].precision)
    assert math.isnan(r["z"].ap_voc07) and math.isnan(r["z"].ap_area) and not r["z"].defined
    assert r.map_voc07 == pytest.approx(0.5) and r.map_area == pytest.approx(0.5)  # mean of x and y only
    assert any("z" in note and "left out" in note for note in r.notes)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)  # NaN becomes null: strict JSON
    assert d["classes"][2]["ap_voc07"] is None


def test_detections_of_a_class_without_positives_are_false_positives_and_ap_stays_undefined():
    gts = [gt("a", [(*A, 0)])]
    dets = [det("a", [(*A, 0.9, 0), (*B, 0.8, 1)])]
    r = assert_matches_reference(dets, gts, ["x", "y"])
    assert (r["y"].tp, r["y"].fp) == (0, 1) and math.isnan(r["y"].ap_area)
    assert r.map == pytest.approx(1.0)


def test_no_class_with_positives_gives_nan_map():
    r = evaluate_voc([det("a", [(*A, 0.9, 0)])], [gt("a")], ["x"])
    assert math.isnan(r.map_voc07) and math.isnan(r.map_area)
    assert r.to_dict()["map"] is None


def test_detections_in_an_image_without_ground_truth_are_false_positives():
    # ranked: FP (image b has no boxes), TP -> precision 0, 1/2 at recall 0, 1
    gts = [gt("a", [(*A, 0)]), gt("b")]
    dets = {"b": det("b", [(*A, 0.9, 0)]), "a": det("a", [(*A, 0.8, 0)])}
    r = assert_matches_reference(list(dets.values()), gts, ["x"])
    r2 = evaluate_voc(dets, gts, ["x"])  # a mapping works the same
    for res in (r, r2):
        assert (res["x"].tp, res["x"].fp) == (1, 1)
        assert res["x"].ap_area == pytest.approx(0.5, abs=TOL)
        assert res["x"].ap_voc07 == pytest.approx(0.5, abs=TOL)


def test_detection_for_an_unknown_image_is_an_error():
    with pytest.raises(InputError, match="not in the evaluated split"):
        evaluate_voc([det("zzz", [(*A, 0.9, 0)])], [gt("a", [(*A, 0)])], ["x"])


def test_label_outside_the_classes_is_an_error():
    with pytest.raises(InputError, match="outside the 1 classes"):
        evaluate_voc([det("a", [(*A, 0.9, 3)])], [gt("a", [(*A, 0)])], ["x"])


def test_iou_exactly_one_half_with_plus_one_areas_is_a_match():
    # det (0,0,9,4): 50 px inside the 100 px box A -> IoU exactly 0.5 with +1 areas (the devkit's >= accepts it;
    # without the +1 it would be 36/81 and a strict > would reject it)
    gts = [gt("a", [(*A, 0)])]
    r = assert_matches_reference([det("a", [(0, 0, 9, 4, 0.9, 0)])], gts, ["x"])
    assert r["x"].tp == 1 and r["x"].ap_area == pytest.approx(1.0)
    r = evaluate_voc([det("a", [(0, 0, 9, 3, 0.9, 0)])], gts, ["x"])  # 40 px: IoU 0.4
    assert r["x"].fp == 1


def test_tied_scores_keep_ground_truth_image_order_whatever_the_detection_order():
    # a FP in image a and a TP in image b with the same score: a comes first in the split, so the FP ranks first
    dets = [det("b", [(*A, 0.5, 0)]), det("a", [(*C, 0.5, 0)])]
    r = assert_matches_reference(dets, [gt("a"), gt("b", [(*A, 0)])], ["x"])
    assert r["x"].ap_area == pytest.approx(0.5)
    r = assert_matches_reference(dets, [gt("b", [(*A, 0)]), gt("a")], ["x"])
    assert r["x"].ap_area == pytest.approx(1.0)
    # within one image, ties keep the order of the detections
    r = evaluate_voc([det("a", [(*C, 0.5, 0), (*A, 0.5, 0)])], [gt("a", [(*A, 0)])], ["x"])
    assert r["x"].ap_area == pytest.approx(0.5)


def test_repeated_image_entries_are_concatenated():
    gts = [gt("a", [(*A, 0), (*B, 0)])]
    r = evaluate_voc([det("a", [(*A, 0.9, 0)]), det("a", [(*B, 0.8, 0)])], gts, ["x"])
    assert (r["x"].tp, r["x"].num_detections, r["x"].ap_area) == (2, 2, 1.0)


def test_average_precision_by_hand():
    # recall 0.2, 0.4, 0.4, 0.6 with precision 1, 1, 2/3, 3/4: envelope 1, 1, 3/4, 3/4
    rec = np.array([0.2, 0.4, 0.4, 0.6])
    prec = np.array([1.0, 1.0, 2 / 3, 3 / 4])
    # area: 0.2 * 1 + 0.2 * 1 + 0.2 * 3/4 = 0.55
    assert average_precision(rec, prec, use_07_metric=False) == pytest.approx(0.55, abs=TOL)
    # 11-point: t = 0 .. 0.4 -> 1 (5 points); t = 0.5, 0.6 -> 3/4 (2 points); t = 0.7 .. 1 -> 0
    assert average_precision(rec, prec, use_07_metric=True) == pytest.approx((5 + 1.5) / 11, abs=TOL)
    assert average_precision(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), use_07_metric=False) == 0.0


def test_eleven_point_thresholds_are_exact_tenths():
    # a recall of exactly 3/10 reaches t = 0.3 (np.arange's 0.30000000000000004 would miss it)
    assert average_precision(np.array([3 / 10]), np.array([1.0]), use_07_metric=True) == pytest.approx(4 / 11)
    assert average_precision(np.array([7 / 10]), np.array([1.0]), use_07_metric=True) == pytest.approx(8 / 11)


def test_average_precision_rejects_bad_curves():
    with pytest.raises(ValueError):
        average_precision(np.array([0.5, 0.2]), np.array([1.0, 1.0]), use_07_metric=False)
    with pytest.raises(ValueError):
        average_precision(np.array([0.5]), np.array([1.0, 1.0]), use_07_metric=True)


def test_headline_and_protocol():
    gts = [gt("a", [(*A, 0), (*B, 0)])]
    dets = [det("a", [(*A, 0.9, 0), (0, 0, 9, 8, 0.8, 0), (*B, 0.7, 0)])]
    r07 = evaluate_voc(dets, gts, ["x"], headline="voc07")
    ra = evaluate_voc(dets, gts, ["x"], headline="area")
    assert r07.map == pytest.approx(28 / 33) and ra.map == pytest.approx(5 / 6)
    assert "IoU >= 0.5" in r07.protocol and "VOC07 11-point AP headline" in r07.protocol
    assert "area AP" in ra.protocol.split(",")[-1]
    assert headline_for("/data/VOCdevkit/VOC2007") == "voc07" and headline_for("raccoon") == "area"


# --------------------------------------------------------------------------------------------------
# random cases against the reference
# --------------------------------------------------------------------------------------------------


def random_case(seed: int, num_images: int = 25, num_classes: int = 4):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.integers(0, 80, size=(n, 2))
        wh = rng.integers(10, 50, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(0, num_classes, n)
        difficult = rng.random(n) < 0.2
        gts.append(GT(f"img{i:03d}", boxes, labels, difficult))
        # jittered copies of the ground truth (some twice, some with the wrong class) plus clutter
        m = int(rng.integers(0, 12))
        src = rng.integers(0, max(n, 1), m)
        jitter = rng.normal(0, 2.5, size=(m, 4))
        db = (boxes[src] + jitter) if n else rng.integers(0, 100, size=(m, 4)).astype(np.float64)
        clutter = rng.random(m) < 0.3
        xy2 = rng.integers(0, 80, size=(m, 2))
        db[clutter] = np.concatenate([xy2, xy2 + rng.integers(4, 40, size=(m, 2))], 1)[clutter]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2])
        dl = labels[src] if n else rng.integers(0, num_classes, m)
        dl = np.where(rng.random(m) < 0.15, rng.integers(0, num_classes, m), dl)
        scores = np.round(rng.random(m), 1)  # one decimal: many ties
        dets.append(Detections(f"img{i:03d}", db, scores, dl))
    order = rng.permutation(num_images)  # detection order must not matter
    return [dets[k] for k in order], gts


@pytest.mark.parametrize("seed", range(8))
def test_random_detections_agree_with_the_devkit_loop(seed):
    dets, gts = random_case(seed)
    classes = ["c0", "c1", "c2", "c3"]
    result = assert_matches_reference(dets, gts, classes)
    refs = [reference_class(dets, gts, c) for c in range(len(classes))]
    defined = [r for r in refs if r[4] > 0]
    assert result.map_voc07 == pytest.approx(np.mean([r[0] for r in defined]), abs=TOL)
    assert result.map_area == pytest.approx(np.mean([r[1] for r in defined]), abs=TOL)


# --------------------------------------------------------------------------------------------------
# files and presentation
# --------------------------------------------------------------------------------------------------


def test_saved_detections_round_trip_exactly(tmp_path):
    dets, gts = random_case(3)
    dets.append(Detections.empty("img999"))
    path = tmp_path / "detections.npz"
    save_detections(path, dets, ["c0", "c1", "c2", "c3"], {"weights": "w.pt", "scale": 600})
    saved = load_detections(path)
    assert saved.classes == ["c0", "c1", "c2", "c3"]
    assert saved.meta == {"weights": "w.pt", "scale": 600}
    assert [d.image_id for d in saved.detections] == [d.image_id for d in dets]
    for a, b in zip(dets, saved.detections):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert b.boxes.dtype == np.float32 and b.labels.dtype == np.int64
    r1 = evaluate_voc(dets[:-1], gts, saved.classes)
    r2 = evaluate_voc(saved.detections[:-1], gts, saved.classes)
    assert r1.to_dict() == r2.to_dict()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_loading_something_else_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a fastrcnn detections file"):
        load_detections(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="not a fastrcnn detections file"):
        load_detections(other)
    with pytest.raises(InputError, match="no such file"):
        load_detections(tmp_path / "missing.npz")


def test_table_lists_every_class_the_map_and_the_protocol():
    from rich.console import Console

    dets, gts = random_case(1)
    result = evaluate_voc(dets, gts, ["c0", "c1", "c2", "c3", "empty"])
    table = render_table(result)
    assert table.row_count == 6
    console = Console(record=True, width=160, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "mAP" in text and "PASCAL VOC" in text and "n/a" in text and "empty" in text
    assert f"mAP {100 * result.map:.1f} %" in text  # one unit in human output: percent, one decimal
    assert map_text(0.8976) == "mAP 89.8 %" and map_text(float("nan")) == "mAP n/a"


def test_plot_writes_a_png(tmp_path):
    dets, gts = random_case(2)
    result = evaluate_voc(dets, gts, ["c0", "c1", "c2", "c3", "empty"])
    path = tmp_path / "pr.png"
    plot_precision_recall(result, path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_curves_in_json_on_request():
    dets, gts = random_case(4)
    result = evaluate_voc(dets, gts, ["c0", "c1", "c2", "c3"])
    assert "precision_curve" not in result.to_dict()["classes"][0]
    d = result.to_dict(curves=True)["classes"][0]
    assert len(d["precision_curve"]) == len(d["recall_curve"]) == d["tp"] + d["fp"]
