#!/usr/bin/env python3
"""Batch inference over a sharded image set on a Dask cluster, with the netc Python package.

    python examples/dask_batch.py resnet50.netc --input photos/ --output results.jsonl

The image paths (a folder, a glob or files) are cut into shards of --shard-size paths; each shard is
one Dask task. Every worker process loads the bundle once, when it joins (a Dask `WorkerPlugin`
registered with the cluster, so workers that join later load it too), and runs each shard it is
given in batches of --batch images: `netc.load_image` (the preprocessing of `netc run`), then the
model. Results come back in input order, one JSON line per image:

    {"image": "photos/cat.jpg", "class": 281, "label": "tabby", "prob": 0.8171}

An image that cannot be read or decoded gets `{"image": ..., "error": "..."}` and the others go on;
the exit code is 1 if any failed.

Why Dask distributed (and not Ray Data): it is pure Python with small dependencies (about 40 MB
installed with dask itself; `pip install "dask[distributed]"` takes seconds), a `LocalCluster` of
worker processes starts in a second or two even on two cores, and the same script runs unchanged
against a multi-machine cluster (`--scheduler tcp://host:8786`, started with `dask scheduler` and
`dask worker`). Ray Data would do too, but its wheel is far larger and it starts a heavier runtime
(its own control-plane processes) for nothing this job needs: the work is independent per file.

Memory: `netc.load` memory-maps the bundle's packed weights, so the worker processes of one machine
share those pages through the page cache (one copy of the weights in RAM however many workers);
each process only compiles its own machine code and keeps its own buffers. Without --scheduler the
script starts a LocalCluster of --workers processes of one thread each, and each model runs on
--threads threads (default 1: one core per worker, no oversubscription).

The bundle and the images are read by the workers: on a multi-machine cluster they must be at the
same paths on every machine (a shared file system). Paths are made absolute before they are sent.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from distributed import Client, LocalCluster, WorkerPlugin, get_worker

import netc

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

class NetcBundle(WorkerPlugin):
    """Loads a netc bundle once in each worker process (in `setup`, when the plugin is registered
    or a worker joins); the shard tasks then use `worker.plugins[name].model`. It counts its loads
    and the shards it ran, for `worker_stats`."""

    def __init__(self, bundle: str, threads: Optional[int] = 1, isa: Optional[str] = None):
        self.bundle = os.path.abspath(bundle)
        self.threads = threads
        self.isa = isa
        self.name = plugin_name(self.bundle)
        self.model: Optional[netc.Model] = None
        self.loads = 0
        self.shards = 0

    def setup(self, worker: Any) -> None:
        self.model = netc.load(self.bundle, threads=self.threads, isa=self.isa)
        self.loads += 1

    def teardown(self, worker: Any) -> None:
        self.model = None


def plugin_name(bundle: str) -> str:
    """The plugin's name on the workers: one plugin (one loaded model) per bundle path."""
    return "netc-bundle:" + os.path.abspath(bundle)


def image_paths(inputs: Sequence[str]) -> List[str]:
    """The images named by `inputs`, in order: a folder's .jpg/.jpeg/.png files sorted by name,
    a glob's matches sorted (`**` recurses), a file as it is. Absolute paths, for the workers."""
    paths: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(IMAGE_SUFFIXES))
            paths += [os.path.join(item, n) for n in names]
        elif any(c in item for c in "*?["):  # a glob pattern
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            paths += [m for m in matches if os.path.isfile(m)]
        else:
            paths.append(item)
    return [os.path.abspath(p) for p in paths]


def classify(model: netc.Model, paths: Sequence[str], batch: int = 32) -> List[Dict[str, Any]]:
    """Runs `model` (one image input `[3, H, W]`, logits `[N, classes]` out) on `paths` in batches
    of `batch`: one record per path, in order, `{"image", "class", "prob", "logits"}` (top-1 class,
    its softmax probability, the float32 logits) or `{"image", "error"}`."""
    shapes = list(model.input_shapes.values())
    if len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][0] != 3:
        raise ValueError(f"expected a model with one RGB image input [3, H, W], got {model.input_shapes}")
    _, height, width = shapes[0]
    records: List[Dict[str, Any]] = []
    for start in range(0, len(paths), batch):
        chunk = list(paths[start : start + batch])
        out: List[Dict[str, Any]] = [{"image": p} for p in chunk]
        images, rows = [], []
        for i, path in enumerate(chunk):
            try:
                images.append(netc.load_image(path, (height, width)))
                rows.append(i)
            except netc.NetcError as e:
                out[i]["error"] = str(e)
        if images:
            logits = model(np.stack(images))
            if not isinstance(logits, np.ndarray) or logits.ndim != 2:
                raise ValueError("expected a model with one output of logits [N, classes]")
            for row, i in enumerate(rows):
                out[i].update(top1(logits[row]))
        records += out
    return records


def top1(logits: np.ndarray) -> Dict[str, Any]:
    """The most likely class (the first of equals) and its softmax probability, computed in
    float64 as `netc run --top` does, with a copy of the logits."""
    x = logits.astype(np.float64)
    exps = np.exp(x - x.max())
    best = int(np.argmax(logits))
    return {"class": best, "prob": float(exps[best] / exps.sum()), "logits": logits.copy()}


def run_shard(paths: List[str], plugin: str, batch: int) -> List[Dict[str, Any]]:
    """A shard on a worker: the model its `NetcBundle` plugin loaded, on these paths."""
    worker = get_worker()
    bundle: Any = worker.plugins.get(plugin)
    if bundle is None or bundle.model is None:
        raise RuntimeError(f"worker {worker.address} has no {plugin!r} plugin: register NetcBundle first")
    bundle.shards += 1
    return classify(bundle.model, paths, batch)


def shards_of(paths: Sequence[str], shard_size: int) -> List[List[str]]:
    """`paths` cut into consecutive shards of at most `shard_size`."""
    return [list(paths[i : i + shard_size]) for i in range(0, len(paths), shard_size)]


def classify_on_cluster(
    client: Client,
    bundle: str,
    paths: Sequence[str],
    batch: int = 32,
    shard_size: int = 256,
    threads: Optional[int] = 1,
    isa: Optional[str] = None,
    timeout: Optional[float] = None,
) -> Iterator[Dict[str, Any]]:
    """Registers the bundle's plugin on the cluster (each worker loads it once), maps the shards
    of `paths` to the workers and yields the records in input order, each shard's as soon as it
    and those before it are done (waiting at most `timeout` seconds for each)."""
    if __name__ != "__main__":
        # Imported as a module (a test, a notebook), the plugin and the task refer to this module
        # by name: send the file to the workers (and to those that join later). Run as a script,
        # it is `__main__`, whose functions and classes Dask sends by value.
        client.upload_file(os.path.abspath(__file__))
    plugin = NetcBundle(bundle, threads=threads, isa=isa)
    client.register_plugin(plugin)
    futures = [
        client.submit(run_shard, shard, plugin.name, batch, pure=False)
        for shard in shards_of(paths, shard_size)
    ]
    for future in futures:
        yield from future.result(timeout=timeout)
        future.release()


def worker_stats(client: Client, bundle: str) -> Dict[str, Dict[str, int]]:
    """Per worker address: how often its plugin loaded the bundle, how many shards it ran, and the
    worker's process id."""

    def stats(dask_worker: Any, name: str = plugin_name(bundle)) -> Dict[str, int]:
        plugin = dask_worker.plugins.get(name)
        return {
            "loads": plugin.loads if plugin else 0,
            "shards": plugin.shards if plugin else 0,
            "pid": os.getpid(),
        }

    return client.run(stats)


def json_line(record: Dict[str, Any], labels: Optional[Sequence[str]], with_logits: bool) -> str:
    """One record as a JSON line (logits as a list when asked for)."""
    line = {"image": record["image"]}
    if "error" in record:
        line["error"] = record["error"]
    else:
        line["class"] = record["class"]
        if labels is not None and len(labels) == len(record["logits"]):
            line["label"] = labels[record["class"]]
        line["prob"] = round(record["prob"], 6)
        if with_logits:
            line["logits"] = [float(v) for v in record["logits"]]
    return json.dumps(line)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Classify a set of images on a Dask cluster with a netc bundle: the paths are cut into "
            "shards, each worker process loads the bundle once (memory-mapped: the workers of one "
            "machine share its pages) and runs its shards in batches; one JSON line per image comes "
            "back in input order."
        ),
        epilog=(
            "examples:\n"
            "  netc compile models/resnet18.net --weights r18.safetensors -o r18.netc\n"
            "  python examples/dask_batch.py r18.netc --input photos/ --workers 2 --output out.jsonl\n"
            "  python examples/dask_batch.py r18.netc --input 'photos/**/*.jpg' --scheduler tcp://10.0.0.5:8786\n"
            "\n"
            "Each output line is {\"image\", \"class\", \"label\", \"prob\"} (label: ImageNet's names for "
            "1000 classes, or --labels), or {\"image\", \"error\"} for an image that could not be read; "
            "the exit code is 1 if any image failed. The preprocessing is `netc run`'s (torchvision's "
            "ImageNet preset). On a multi-machine cluster the bundle and the images must be at the same "
            "paths on every worker."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", help="a compiled bundle (netc compile M.net --weights W -o M.netc)")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="folders (their .jpg/.jpeg/.png files, sorted), globs (quote them; ** recurses) or image files",
    )
    parser.add_argument("--output", metavar="FILE", help="write the JSON lines here (default: standard output)")
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: start a LocalCluster here)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="LocalCluster worker processes (default: one per core)"
    )
    parser.add_argument("--batch", type=int, default=32, help="images per model run (default 32)")
    parser.add_argument(
        "--shard-size", type=int, default=256, help="images per Dask task (default 256; a multiple of --batch)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per model run on a worker (default 1)")
    parser.add_argument("--isa", default=None, help="auto (default), avx512, avx2 or sse")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: ImageNet's for 1000 classes)")
    parser.add_argument("--logits", action="store_true", help="also write each image's logits")
    args = parser.parse_args(argv)
    for name in ("batch", "shard_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        paths = image_paths(args.input)
    except FileNotFoundError as e:
        print(f"dask_batch: {e}", file=sys.stderr)
        return 2
    if not paths:
        print("dask_batch: no images found", file=sys.stderr)
        return 2
    if args.labels:
        with open(args.labels, encoding="utf-8") as f:
            labels: Optional[List[str]] = [line.strip() for line in f if line.strip()]
    else:
        labels = netc.imagenet_labels()
    started = time.perf_counter()
    if args.scheduler:
        cluster = None
        client = Client(args.scheduler)
    else:
        workers = args.workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failed = 0
    try:
        for record in classify_on_cluster(
            client, args.bundle, paths, args.batch, args.shard_size, args.threads, args.isa
        ):
            failed += "error" in record
            out.write(json_line(record, labels, args.logits) + "\n")
        workers = len(worker_stats(client, args.bundle))
    finally:
        if out is not sys.stdout:
            out.close()
        client.close()
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - started
    shards = math.ceil(len(paths) / args.shard_size)
    print(
        f"dask_batch: {len(paths)} images ({failed} failed) in {shards} shards on {workers} workers, "
        f"{seconds:.1f} s",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
