"""Validates ONNX files exported by `netc export` and runs them under ONNX Runtime.

usage: check_export.py INPUT.npy EXPECTED.npy MODEL.onnx [MODEL.onnx ...]

Each model must pass `onnx.checker.check_model(full_check=True)` (which also runs ONNX's shape
inference) and, run by ONNX Runtime's CPU provider on INPUT, agree with EXPECTED (netc's reference
interpreter on the same input and weights): max |diff| <= 1e-3 * max |expected| and the same top-1
class for every sample. Prints one line per model; exits 1 on the first disagreement.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(argv):
    x = np.load(argv[1])
    expected = np.load(argv[2])
    for path in argv[3:]:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        if got.shape != expected.shape:
            print(f"{path}: output shape {got.shape}, expected {expected.shape}")
            return 1
        worst = float(np.abs(got - expected).max())
        scale = float(np.abs(expected).max())
        same_top1 = bool((got.argmax(axis=1) == expected.argmax(axis=1)).all())
        print(f"{path}: {len(model.graph.node)} nodes, max |diff| {worst:.3e} of max |logit| {scale:.3e}, "
              f"same top-1: {same_top1}")
        if worst > 1e-3 * scale or not same_top1:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
