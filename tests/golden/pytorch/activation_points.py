"""PyTorch's activations at fixed points, the oracle of the reference interpreter's activations
(runtime/src/reference/eltwise.rs, test `activations_equal_pytorch_at_fixed_points`).

Run: python3 tests/golden/pytorch/activation_points.py  (prints the Rust table pasted there).
"""
import torch
import torch.nn.functional as F

X = [-100.0, -20.0, -5.5, -3.0, -2.9, -1.0, -0.25, 0.0, 0.3, 1.0, 2.5, 3.0, 4.0, 7.0, 30.0]
FUNCTIONS = [
    ("Sigmoid", torch.sigmoid),
    ("Silu", F.silu),
    ("Hardsigmoid", F.hardsigmoid),
    ("Hardswish", F.hardswish),
    ("relu6", F.relu6),
    ("hardtanh", F.hardtanh),
    ("clamp(min=0.5)", lambda t: torch.clamp(t, min=0.5)),
    ("clamp(max=-0.75)", lambda t: torch.clamp(t, max=-0.75)),
]

x = torch.tensor(X, dtype=torch.float32)
print(f"const X: [f32; {len(X)}] = [{', '.join(repr(v) for v in X)}];")
for name, f in FUNCTIONS:
    values = ", ".join(repr(float(v)) for v in f(x))
    print(f"// {name}\n[{values}],")
