"""Type stubs of the extension module `netc._netc` (re-exported by `netc`)."""

import os
from typing import Dict, Iterable, List, Optional, Tuple, TypedDict, Union, final

import numpy as np
import numpy.typing as npt

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

_Path = Union[str, "os.PathLike[str]"]

class NetcError(ValueError):
    """A model could not be checked, compiled, loaded or run; the message is netc's full
    report (a `.net` diagnostic with its file, line, column, source line and caret)."""

class _LayerSummary(TypedDict):
    name: str
    op: str
    output_shape: Tuple[int, ...]
    params: int
    macs: int

@final
class Model:
    """A compiled model: call it on float32 arrays `[N, ...]` (the batch first). Thread-safe:
    one model may be called from several Python threads at once."""

    def __call__(
        self, *inputs: npt.NDArray[np.float32]
    ) -> Union[npt.NDArray[np.float32], Tuple[npt.NDArray[np.float32], ...]]:
        """The model on one C-contiguous float32 array per input (`[N, C, H, W]` for an image
        model): the output array, or a tuple of arrays for a model with several outputs.
        Raises TypeError for another dtype, NetcError for another shape."""
    def run(
        self, *inputs: npt.NDArray[np.float32]
    ) -> Union[npt.NDArray[np.float32], Tuple[npt.NDArray[np.float32], ...]]:
        """The same as `model(*inputs)`."""
    @property
    def input_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """The per-sample shape of each input, by name: `{"image": (3, 224, 224)}`."""
    def output_shapes(self, n: int) -> List[Tuple[int, ...]]:
        """The shape of each output for a batch of `n`, batch first: `[(n, 1000)]`."""
    @property
    def threads(self) -> int:
        """Threads of each run, the caller's included."""

def load(path: _Path, *, threads: Optional[int] = None, isa: Optional[str] = None) -> Model:
    """A compiled bundle (`netc compile`), its packed weights memory-mapped. `isa`: "auto"
    (default), "avx512", "avx2" or "sse"; `threads`: default every core."""

def compile(
    net: _Path,
    weights: _Path,
    output: Optional[_Path] = None,
    *,
    threads: Optional[int] = None,
    isa: Optional[str] = None,
    optimize: bool = True,
    allow_nonfinite: bool = False,
) -> Model:
    """A `.net` model compiled with its weights (safetensors); with `output`, also written
    there as a bundle, and the model returned is that bundle, loaded."""

def check(source: Union[str, "os.PathLike[str]"]) -> None:
    """Checks a `.net` model (syntax, names, types, every shape), raising NetcError with the
    rendered diagnostic. A `str` holding a newline or `{` is source text; any other `str` or
    an `os.PathLike` is a path."""

def summary(path: _Path, *, train: bool = False) -> List[_LayerSummary]:
    """One dict per layer (`name`, `op`, `output_shape` per sample, `params`, `macs` per
    sample), as `netc summary` prints them; a bundle is summarised as it runs (optimised)."""

def write_random_weights(net: _Path, output: _Path, seed: int = 0) -> None:
    """Deterministic He-initialised weights for a `.net` model, as safetensors with its
    scoped names (what `netc init` writes)."""

def load_image(path: _Path, size: Tuple[int, int] = (224, 224)) -> npt.NDArray[np.float32]:
    """A JPEG or PNG file as a float32 array `[3, H, W]` (`size` is `(H, W)`, each side at most
    8192), preprocessed exactly as `netc run` does: torchvision's ImageNet preset (shorter side
    resized to 256, antialiased bilinear; centre crop; [0, 1]; ImageNet mean and std). Raises
    NetcError naming the file if it cannot be read or decoded."""

def load_images(paths: Iterable[_Path], size: Tuple[int, int] = (224, 224)) -> npt.NDArray[np.float32]:
    """Several images as one batch `[N, 3, H, W]`, each as `load_image` makes it, the GIL
    released while they are decoded; the first file that cannot be used raises NetcError
    naming it."""

def imagenet_labels() -> List[str]:
    """The 1000 ImageNet class names in torchvision's order (what `netc run` prints for a
    model with 1000 classes)."""
