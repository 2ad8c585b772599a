#!/usr/bin/env python3
"""Generate PyTorch reference outputs ("golden" files) for netc's agreement tests.

Purpose
-------
netc's compiled networks must agree with PyTorch. This script builds every seed
model in PyTorch (eval mode, float32), fills every floating-point state_dict
tensor with the deterministic "netc-fill v1" generator (keyed by the tensor's
state_dict name, so the Rust side can regenerate the very same weights without
any weight file), builds a deterministic input with the same generator, runs
the forward pass and writes the logits. It is run by hand; its outputs are
committed, so neither the tests nor CI need PyTorch.

netc-fill v1 (reimplemented bit-exactly on the Rust side)
---------------------------------------------------------
* seed = FNV-1a 64 of the key's UTF-8 bytes (basis 0xcbf29ce484222325,
  prime 0x100000001b3).
* element i (0-based, row-major): z = seed + (i+1) * 0x9E3779B97F4A7C15;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
  z = z ^ (z >> 31)   (all wrapping u64); u = (z >> 40) as f64 / 2^24.
* value = (lo + (hi - lo) * u) computed in f64, then rounded to f32.
* ranges: "*.weight" rank >= 2: b = sqrt(6 / prod(shape[1:])), [-b, b];
  "*.weight" rank 1: [0.5, 1.5]; "*.bias" (rank 1): [-0.2, 0.2];
  "*.running_mean": [-0.2, 0.2]; "*.running_var": [0.5, 2.0];
  "*.num_batches_tracked" (int64): left untouched; anything else: error.
* the input uses key "input", shape [N, 3, H, W], range [-2.0, 2.0].

Install (CPU only; only PyPI is reachable, no download.pytorch.org)
-------------------------------------------------------------------
PyPI's Linux torch wheel is built against CUDA and will not import without the
CUDA shared libraries, even for CPU work. What worked (Python 3.11, x86_64),
skipping triton and cuda-bindings (not needed for eager CPU inference):

    pip install --no-deps torch==2.14.1 torchvision==0.29.2
    pip install filelock typing-extensions sympy networkx jinja2 fsspec \
        numpy pillow safetensors
    pip install "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3" \
        nvidia-cudnn-cu13==9.24.0.43 nvidia-cusparselt-cu13==0.8.1 \
        nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.4.5
    # only for --write-sample-image (re-creating models/sample/cat.jpg):
    pip install scikit-image

(the third line is ~2.2 GB of downloads; torch itself is 555 MB.)

Run
---
    python3 tests/golden/pytorch/make_golden.py           # from the repo root
    python3 tests/golden/pytorch/make_golden.py --only resnet18,alexnet_paper
    python3 tests/golden/pytorch/make_golden.py --write-sample-image   # see below

Takes about 50 s on 2 cores (torch single-threaded), a few GB of memory at peak (VGG).

Writes (into this script's directory, tests/golden/pytorch/)
------------------------------------------------------------
* <model>.logits.npy  float32 '<f4' [N, 1000] eval-mode logits, for alexnet,
  vgg11/13/16/19, googlenet (aux_logits=True, transform_input=False),
  resnet18/34/50/101/152, alexnet_paper, preact_resnet50, mobilenet_v2,
  shufflenet_v2_x1_0, efficientnet_b0, mobilenet_v3_small, regnet_x_400mf, densenet121 (N = 1) and
  resnet18_b2 (resnet18 with N = 2; its batch row 0 equals resnet18's input).
* mobilenet_v2.keys.txt, shufflenet_v2_x1_0.keys.txt, efficientnet_b0.keys.txt,
  mobilenet_v3_small.keys.txt, regnet_x_400mf.keys.txt, densenet121.keys.txt  torchvision's state_dict keys and shapes ("key CxKxK"
  per line, num_batches_tracked left out), for the key-name test of tests/models.rs.
* googlenet_torchvision_f16.safetensors  a real torchvision googlenet
  state_dict (aux_logits=False) filled with the generator, every floating
  tensor stored as float16, num_batches_tracked kept as int64;
  googlenet_torchvision_f16.logits.npy  the logits of that model with the f16
  values loaded back as float32, on the "input" [1,3,224,224] tensor.
* cat.preprocessed.npy  float32 [1,3,224,224]: models/sample/cat.jpg loaded
  with PIL (RGB) through torchvision's ImageNet preset (Resize(256) bilinear
  antialias, CenterCrop(224), ToTensor, Normalize(ImageNet mean/std)).
* manifest.json  versions, generator check values ("fill_check") and, per
  model, input shape, logits file, parameter count and logit statistics.

With --write-sample-image it (re)writes models/sample/cat.jpg from
scikit-image's bundled CC0 photo skimage.data.chelsea() as baseline JPEG,
quality 90, 4:4:4 (no chroma subsampling).
The committed JPEG is the source of truth: a different libjpeg may encode
different bytes.

Determinism: every tensor comes from the generator; no RNG is used (dropout is
inactive in eval mode). torch runs single-threaded so reductions do not depend
on the thread count; results on another CPU type may still differ in the last
bits (different SIMD kernels), which is why the Rust tests use tolerances.
"""

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision import transforms

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SAMPLE_JPEG = REPO / "models" / "sample" / "cat.jpg"

GENERATOR = "netc-fill v1"

# ---------------------------------------------------------------------------
# netc-fill v1
# ---------------------------------------------------------------------------
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
U64 = (1 << 64) - 1
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
CHUNK = 1 << 22  # elements per vectorised chunk (bounds temporary memory)


def fnv1a64(key: str) -> int:
    h = FNV_OFFSET
    for byte in key.encode("utf-8"):
        h ^= byte
        h = (h * FNV_PRIME) & U64
    return h


def unit_u24(seed: int, start: int, count: int) -> np.ndarray:
    """u for elements start..start+count-1, as float64 in [0, 1) with 24 bits."""
    i1 = np.arange(start + 1, start + count + 1, dtype=np.uint64)  # i + 1
    z = np.uint64(seed) + i1 * GOLDEN_GAMMA  # wrapping u64
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0


def fill_uniform(key: str, shape, lo: float, hi: float) -> np.ndarray:
    """float32 array of `shape`: float32(lo + (hi - lo) * u_i), f64 arithmetic."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    seed = fnv1a64(key)
    out = np.empty(n, dtype=np.float32)
    span = hi - lo
    for start in range(0, n, CHUNK):
        cnt = min(CHUNK, n - start)
        u = unit_u24(seed, start, cnt)
        out[start:start + cnt] = (lo + span * u).astype(np.float32)
    return out.reshape(tuple(shape))


def fill_range(key: str, shape) -> tuple:
    """(lo, hi) for a state_dict key, or None for num_batches_tracked."""
    suffix = key.rsplit(".", 1)[-1]
    rank = len(shape)
    if suffix == "weight" and rank >= 2:
        fan_in = int(np.prod(shape[1:]))
        b = math.sqrt(6.0 / fan_in)
        return (-b, b)
    if suffix == "weight" and rank == 1:
        return (0.5, 1.5)
    if suffix == "bias" and rank == 1:
        return (-0.2, 0.2)
    if suffix == "running_mean" and rank == 1:
        return (-0.2, 0.2)
    if suffix == "running_var" and rank == 1:
        return (0.5, 2.0)
    if suffix == "num_batches_tracked":
        return None
    raise ValueError(f"netc-fill v1: no range for key {key!r} with shape {list(shape)}")


def fill_state_dict(model: nn.Module) -> None:
    """Overwrite every floating tensor of model.state_dict() in place."""
    with torch.no_grad():
        for key, t in model.state_dict().items():
            rng = fill_range(key, tuple(t.shape))
            if rng is None:
                if t.dtype != torch.int64:
                    raise ValueError(f"{key}: expected int64, got {t.dtype}")
                continue
            if not t.is_floating_point():
                raise ValueError(f"{key}: unexpected dtype {t.dtype}")
            t.copy_(torch.from_numpy(fill_uniform(key, tuple(t.shape), *rng)))


def make_input(shape) -> torch.Tensor:
    return torch.from_numpy(fill_uniform("input", tuple(shape), -2.0, 2.0))


def fill_check_entry(key: str, shape, lo: float, hi: float) -> dict:
    n = min(4, int(np.prod(shape)))
    first = fill_uniform(key, (n,), lo, hi)  # the first elements do not depend on shape
    full = fill_uniform(key, shape, lo, hi)
    assert np.array_equal(full.reshape(-1)[:n], first)
    return {
        "shape": list(shape),
        "range": [lo, hi],
        "seed": f"0x{fnv1a64(key):016x}",
        "first4": [float(v) for v in first],
        "first4_bits": [f"0x{int(v):08x}" for v in first.view(np.uint32)],
        "sum_f64": float(full.astype(np.float64).sum()),
    }


# ---------------------------------------------------------------------------
# Seed-paper variants (key layout as in the reference)
# ---------------------------------------------------------------------------
class AlexNetPaper(nn.Module):
    """The seed paper's AlexNet: 227x227 input, LRN, no grouping, no avgpool."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4),  # 0
            nn.ReLU(inplace=True),  # 1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),  # 3
            nn.Conv2d(96, 256, kernel_size=5, padding=2),  # 4
            nn.ReLU(inplace=True),  # 5
            nn.MaxPool2d(kernel_size=3, stride=2),  # 6
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),  # 7
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # 8
            nn.ReLU(inplace=True),  # 9
            nn.Conv2d(384, 384, kernel_size=3, padding=1),  # 10
            nn.ReLU(inplace=True),  # 11
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 12
            nn.ReLU(inplace=True),  # 13
            nn.MaxPool2d(kernel_size=3, stride=2),  # 14
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),  # 0
            nn.Linear(256 * 6 * 6, 4096),  # 1
            nn.ReLU(inplace=True),  # 2
            nn.Dropout(p=0.5),  # 3
            nn.Linear(4096, 4096),  # 4
            nn.ReLU(inplace=True),  # 5
            nn.Linear(4096, num_classes),  # 6
        )

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck ("Identity Mappings in Deep Residual Networks")."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=1e-5)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width, eps=1e-5)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
        else:
            self.downsample = None
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        p = self.relu(self.bn1(x))
        shortcut = self.downsample(p) if self.downsample is not None else x
        y = self.conv1(p)
        y = self.conv2(self.relu(self.bn2(y)))
        y = self.conv3(self.relu(self.bn3(y)))
        return y + shortcut


class PreActResNet50(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for li, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            seq = []
            for b in range(blocks):
                stride = 2 if (b == 0 and li > 1) else 1
                seq.append(PreActBottleneck(in_ch, width, stride))
                in_ch = width * PreActBottleneck.expansion
            setattr(self, f"layer{li}", nn.Sequential(*seq))
        self.bn = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# Model table
# ---------------------------------------------------------------------------
tvm = torchvision.models

# name -> (builder, batch, input H=W, expected sum(numel(parameters())))
MODELS = {
    "alexnet": (lambda: tvm.alexnet(weights=None), 1, 224, 61_100_840),
    "vgg11": (lambda: tvm.vgg11(weights=None), 1, 224, 132_863_336),
    "vgg13": (lambda: tvm.vgg13(weights=None), 1, 224, 133_047_848),
    "vgg16": (lambda: tvm.vgg16(weights=None), 1, 224, 138_357_544),
    "vgg19": (lambda: tvm.vgg19(weights=None), 1, 224, 143_667_240),
    # aux heads present (training-only; eval returns just the logits)
    "googlenet": (
        lambda: tvm.googlenet(weights=None, aux_logits=True, init_weights=False,
                              transform_input=False),
        1, 224, 13_004_888),
    "resnet18": (lambda: tvm.resnet18(weights=None), 1, 224, 11_689_512),
    "resnet18_b2": (lambda: tvm.resnet18(weights=None), 2, 224, 11_689_512),
    "resnet34": (lambda: tvm.resnet34(weights=None), 1, 224, 21_797_672),
    "resnet50": (lambda: tvm.resnet50(weights=None), 1, 224, 25_557_032),
    "resnet101": (lambda: tvm.resnet101(weights=None), 1, 224, 44_549_160),
    "resnet152": (lambda: tvm.resnet152(weights=None), 1, 224, 60_192_808),
    "alexnet_paper": (AlexNetPaper, 1, 227, 62_378_344),
    "preact_resnet50": (PreActResNet50, 1, 224, 25_549_352),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(weights=None), 1, 224, 3_504_872),
    "shufflenet_v2_x1_0": (lambda: tvm.shufflenet_v2_x1_0(weights=None), 1, 224, 2_278_604),
    "efficientnet_b0": (lambda: tvm.efficientnet_b0(weights=None), 1, 224, 5_288_548),
    "mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(weights=None), 1, 224, 2_542_856),
    "regnet_x_400mf": (lambda: tvm.regnet_x_400mf(weights=None), 1, 224, 5_495_976),
    "densenet121": (lambda: tvm.densenet121(weights=None), 1, 224, 7_978_856),
}
GOOGLENET_NO_AUX_PARAMS = 6_624_904
# Models whose state_dict keys and shapes are also written, one "key dims" line each
# (<model>.keys.txt, num_batches_tracked left out), for tests/models.rs to compare with netc's.
WRITE_KEYS = {"mobilenet_v2", "shufflenet_v2_x1_0", "efficientnet_b0", "mobilenet_v3_small",
              "regnet_x_400mf", "densenet121"}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logit_stats(logits: np.ndarray) -> dict:
    if not np.all(np.isfinite(logits)):
        raise RuntimeError("non-finite logits")
    return {
        "max_abs_logit": float(np.abs(logits).max()),
        "mean_abs_logit": float(np.abs(logits).mean()),
        "std_logit": float(logits.std()),
        "argmax": [int(a) for a in logits.argmax(axis=1)],
    }


def save_logits(name: str, logits: torch.Tensor) -> np.ndarray:
    arr = np.ascontiguousarray(logits.detach().numpy().astype("<f4"))
    np.save(HERE / f"{name}.logits.npy", arr)
    back = np.load(HERE / f"{name}.logits.npy")
    assert back.dtype == np.dtype("<f4") and np.array_equal(back, arr)
    return arr


def run_model(name: str) -> dict:
    builder, batch, hw, expected = MODELS[name]
    model = builder().eval()
    params = count_params(model)
    if params != expected:
        raise RuntimeError(f"{name}: {params} parameters, expected {expected}")
    fill_state_dict(model)
    shape = [batch, 3, hw, hw]
    with torch.no_grad():
        out = model(make_input(shape))
    if tuple(out.shape) != (batch, 1000):
        raise RuntimeError(f"{name}: output shape {tuple(out.shape)}")
    arr = save_logits(name, out)
    entry = {"input": shape, "logits": f"{name}.logits.npy", "params": params}
    if name == "googlenet":
        entry["params_without_aux"] = GOOGLENET_NO_AUX_PARAMS
    if name in WRITE_KEYS:
        lines = [f"{k} {'x'.join(map(str, v.shape))}\n" for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")]
        (HERE / f"{name}.keys.txt").write_text("".join(lines))
        entry["keys"] = f"{name}.keys.txt"
    entry.update(logit_stats(arr))
    return entry


def run_googlenet_f16() -> dict:
    from safetensors.torch import load_file, save_file

    name = "googlenet_torchvision_f16"
    model = tvm.googlenet(weights=None, aux_logits=False, init_weights=False,
                          transform_input=False).eval()
    params = count_params(model)
    if params != GOOGLENET_NO_AUX_PARAMS:
        raise RuntimeError(f"{name}: {params} parameters")
    fill_state_dict(model)
    sd = model.state_dict()
    assert not any(k.startswith("aux") for k in sd)
    sd16 = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in sd.items()}
    path = HERE / f"{name}.safetensors"
    save_file(sd16, str(path))
    loaded = load_file(str(path))
    assert set(loaded) == set(sd16)
    model.load_state_dict(
        {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in loaded.items()},
        strict=True)
    shape = [1, 3, 224, 224]
    with torch.no_grad():
        out = model(make_input(shape))
    arr = save_logits(name, out)
    entry = {
        "input": shape,
        "logits": f"{name}.logits.npy",
        "weights": path.name,
        "weights_bytes": path.stat().st_size,
        "params": params,
        "tensors": len(loaded),
        "f16_tensors": sum(v.dtype == torch.float16 for v in loaded.values()),
        "int64_tensors": sum(v.dtype == torch.int64 for v in loaded.values()),
    }
    entry.update(logit_stats(arr))
    return entry


def write_sample_image() -> None:
    from PIL import Image
    import skimage.data

    SAMPLE_JPEG.parent.mkdir(parents=True, exist_ok=True)
    # baseline JPEG, quality 90, no chroma subsampling (4:4:4), so that decoders
    # need no chroma upsampling (whose filters differ between libraries)
    Image.fromarray(skimage.data.chelsea()).save(SAMPLE_JPEG, format="JPEG", quality=90,
                                                 subsampling=0)
    print(f"wrote {SAMPLE_JPEG}")


def preprocess_sample() -> dict:
    from PIL import Image

    tf = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    with Image.open(SAMPLE_JPEG) as img:
        size = list(img.size)
        x = tf(img.convert("RGB")).unsqueeze(0)
    arr = np.ascontiguousarray(x.numpy().astype("<f4"))
    assert arr.shape == (1, 3, 224, 224)
    np.save(HERE / "cat.preprocessed.npy", arr)
    return {
        "image": "models/sample/cat.jpg",
        "image_size_wh": size,
        "preprocessed": "cat.preprocessed.npy",
        "shape": list(arr.shape),
        "transform": "PIL RGB; Resize(256, bilinear, antialias=True); CenterCrop(224); "
                     "ToTensor; Normalize(mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225])",
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated subset of models (manifest entries "
                    "of the others are kept)")
    ap.add_argument("--write-sample-image", action="store_true",
                    help="(re)write models/sample/cat.jpg from skimage.data.chelsea()")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    if args.write_sample_image:
        write_sample_image()

    manifest_path = HERE / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    all_names = list(MODELS) + ["googlenet_torchvision_f16"]
    names = all_names if not args.only else args.only.split(",")
    for n in names:
        if n not in all_names:
            ap.error(f"unknown model {n!r}; known: {', '.join(all_names)}")

    fill_check = {
        "features.0.weight": fill_check_entry(
            "features.0.weight", (64, 3, 11, 11), -math.sqrt(6.0 / 363), math.sqrt(6.0 / 363)),
        "input": fill_check_entry("input", (1, 3, 224, 224), -2.0, 2.0),
    }
    for k, v in fill_check.items():
        print(f"fill_check {k} {v['shape']} seed={v['seed']} first4={v['first4']} "
              f"bits={v['first4_bits']}")

    models = dict(old.get("models", {}))
    for n in names:
        t = time.time()
        entry = run_googlenet_f16() if n == "googlenet_torchvision_f16" else run_model(n)
        models[n] = entry
        print(f"{n:28s} params={entry['params']:>11,d} max|logit|={entry['max_abs_logit']:.6g} "
              f"mean|logit|={entry['mean_abs_logit']:.6g} ({time.time() - t:.1f} s)", flush=True)
        gc.collect()

    sample = preprocess_sample() if SAMPLE_JPEG.exists() else old.get("sample_image")
    if sample is None:
        print(f"warning: {SAMPLE_JPEG} missing; run with --write-sample-image", file=sys.stderr)

    manifest = {
        "generator": GENERATOR,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "fill_check": fill_check,
        "models": {n: models[n] for n in all_names if n in models},
    }
    if sample is not None:
        manifest["sample_image"] = sample
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {manifest_path} in {time.time() - t0:.1f} s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
