#!/usr/bin/env python3
"""The retrain bench's baseline and data (Debian: python3-opencv, python3-sklearn).

  retrain_sklearn.py digits OUT_DIR
      scikit-learn's handwritten digits (1,797 8x8 images, 10 labels) as retrain.py's folder
      layout: OUT_DIR/<digit>/digit_<i>.jpg, 64x64 grey JPEGs.
  retrain_sklearn.py baseline IMAGE_DIR GRAPH.pb NODE TESTING VALIDATION
      The same job as `classify retrain` with OpenCV and scikit-learn: the frozen graph's NODE
      (its pooled features) computed by OpenCV's dnn for every image, retrain.py's split, then
      LogisticRegression (its defaults: L2, C=1, lbfgs) on the training set. Prints JSON.
"""
import hashlib
import json
import os
import re
import sys
import time

import cv2
import numpy as np


def digits(out):
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = os.path.join(out, str(label))
        os.makedirs(folder, exist_ok=True)
        big = cv2.resize((img * (255.0 / 16)).astype(np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, f"digit_{i}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])


MAX = 2**27 - 1


def which_set(path, validation, testing):
    """retrain.py's rule, on the file name (as classify hashes it)."""
    name = re.sub(r"_nohash_.*$", "", os.path.basename(path))
    pct = (int(hashlib.sha1(name.encode()).hexdigest(), 16) % (MAX + 1)) * (100.0 / MAX)
    return "validation" if pct < validation else "testing" if pct < validation + testing else "training"


def baseline(image_dir, graph, node, testing, validation):
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    labels = sorted(d for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d)))
    files = []
    for k, label in enumerate(labels):
        for root, _, names in os.walk(os.path.join(image_dir, label)):
            files += [(os.path.join(root, n), k) for n in sorted(names) if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    net = cv2.dnn.readNetFromTensorflow(graph)
    feats = []
    for at in range(0, len(files), 64):
        # As the graph was trained: RGB, 128x128 bilinear, (x - 127.5) / 127.5.
        imgs = [cv2.imread(f) for f, _ in files[at : at + 64]]
        blob = cv2.dnn.blobFromImages(imgs, 1 / 127.5, (128, 128), (127.5, 127.5, 127.5), swapRB=True)
        net.setInput(blob)
        feats.append(net.forward(node).reshape(len(imgs), -1))
    x = np.concatenate(feats)
    features_s = time.perf_counter() - start
    y = np.array([k for _, k in files])
    sets = np.array([which_set(f, validation, testing) for f, _ in files])
    t = time.perf_counter()
    clf = LogisticRegression(max_iter=1000).fit(x[sets == "training"], y[sets == "training"])
    fit_s = time.perf_counter() - t
    test = sets == "testing"
    print(json.dumps({
        "images": len(files),
        "features": int(x.shape[1]),
        "test_accuracy": float((clf.predict(x[test]) == y[test]).mean()),
        "test_n": int(test.sum()),
        "features_s": features_s,
        "fit_s": fit_s,
        "wall_s": time.perf_counter() - start,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "digits":
        digits(sys.argv[2])
    else:
        baseline(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
