"""netc: a declarative neural-network graph compiler and runtime, numpy in, numpy out.

    import numpy as np, netc
    m = netc.load("resnet50.netc")                      # a bundle from `netc compile`
    m = netc.compile("m.net", weights="w.safetensors")  # or a .net model and its weights
    y = m(np.zeros((1, 3, 224, 224), np.float32))       # [N, C, H, W] float32 -> logits
    x = netc.load_image("cat.jpg", (224, 224))          # [3, H, W], preprocessed as `netc run`

The GIL is released while a model runs: several threads may call one model.
"""

from ._netc import (
    Model,
    NetcError,
    check,
    compile,
    imagenet_labels,
    load,
    load_image,
    load_images,
    summary,
    write_random_weights,
)

__all__ = [
    "Model",
    "NetcError",
    "check",
    "compile",
    "imagenet_labels",
    "load",
    "load_image",
    "load_images",
    "summary",
    "write_random_weights",
]
