#!/usr/bin/env python3
"""Another runtime's view of an ONNX model classify wrote: ONNX's own checker (full_check) and
OpenCV's dnn importer, and OpenCV's top-1 for each input given (float32 files, one image each,
packed as the model's input). Prints one JSON object. Debian: python3-onnx, python3-opencv.

  onnx-check.py MODEL.onnx [INPUT.f32 ...]
  onnx-check.py --lines     one check per line of stdin, each a JSON list [MODEL, INPUT, ...],
                            answered by a line on stdout (one start for many checks: importing
                            OpenCV and ONNX is most of a check's time)
"""
import json
import sys

import cv2
import numpy as np
import onnx


def check(path, inputs):
    out = {"checker": "ok", "opencv": "ok", "top1": []}
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # the checker's own message is the point
        out["checker"] = str(e).strip().splitlines()[-1]
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    try:
        net = cv2.dnn.readNetFromONNX(path)
        for f in inputs:
            net.setInput(np.fromfile(f, dtype=np.float32).reshape(dims))
            out["top1"].append(int(np.argmax(net.forward().reshape(-1))))
    except Exception as e:
        out["opencv"] = str(e).strip().splitlines()[-1]
    return out


def main():
    if sys.argv[1:] == ["--lines"]:
        for line in sys.stdin:
            path, *inputs = json.loads(line)
            print(json.dumps(check(path, inputs)), flush=True)
    else:
        print(json.dumps(check(sys.argv[1], sys.argv[2:])))


if __name__ == "__main__":
    main()
