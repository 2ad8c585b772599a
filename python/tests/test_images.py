"""Tests of `netc.load_image(s)` and of the Dask example (examples/dask_batch.py): generated PNG
images, a tiny model compiled here, and the example's cluster run compared with a single-process
run, logits bit for bit."""

import os
import struct
import sys
import zlib

import numpy as np
import pytest

import netc

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def write_png(path, pixels):
    """An 8-bit RGB PNG of `pixels` (`[H, W, 3]` uint8), written with zlib alone."""
    height, width, _ = pixels.shape

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_load_image_normalises_a_flat_image_like_netc_run(tmp_path):
    path = tmp_path / "grey.png"
    write_png(path, np.full((30, 40, 3), 128, np.uint8))
    x = netc.load_image(path, (24, 32))
    assert x.dtype == np.float32 and x.shape == (3, 24, 32) and x.flags.c_contiguous
    expected = (np.float32(128) / np.float32(255) - MEAN) / STD  # float32, as the runtime computes
    assert np.array_equal(x, np.broadcast_to(expected[:, None, None], x.shape))
    assert netc.load_image(str(path)).shape == (3, 224, 224)


def test_load_images_stacks_what_load_image_makes(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate([(17, 23), (40, 9), (12, 12)]):
        paths.append(tmp_path / f"{i}.png")
        write_png(paths[-1], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    batch = netc.load_images(paths, (16, 20))
    assert batch.shape == (3, 3, 16, 20) and batch.dtype == np.float32
    for i, path in enumerate(paths):
        assert np.array_equal(batch[i], netc.load_image(path, (16, 20)))
    assert netc.load_images([], (16, 20)).shape == (0, 3, 16, 20)


def test_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(netc.NetcError, match="missing.png"):
        netc.load_image(missing)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(netc.NetcError, match="junk.png"):
        netc.load_images([junk])
    good = tmp_path / "good.png"
    write_png(good, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(netc.NetcError, match="junk.png"):
        netc.load_images([good, junk], (8, 8))
    with pytest.raises(ValueError, match="size"):
        netc.load_image(good, (0, 8))
    with pytest.raises(ValueError, match="size"):
        netc.load_image(good, (8, 100_000))
    with pytest.raises(TypeError):
        netc.load_images(str(good))


def test_imagenet_labels_are_torchvisions():
    labels = netc.imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[281] == "tabby"


# --- the Dask example on a LocalCluster of two worker processes.

NET = """\
network shards(image: [3, 16, 16]) {
  image |> conv(6, 3, pad = 1) @conv1 |> relu |> maxpool(2, 2)
        |> conv(8, 3, pad = 1) @conv2 |> relu |> global_avgpool |> flatten |> linear(10) @fc
}
"""


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """A tiny model's bundle, and 40 generated PNGs of assorted sizes plus one broken file."""
    root = tmp_path_factory.mktemp("dask")
    net, weights, bundle = root / "shards.net", root / "shards.safetensors", root / "shards.netc"
    net.write_text(NET)
    netc.write_random_weights(net, weights, seed=7)
    netc.compile(net, weights, output=bundle)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(13)
    for i in range(40):
        h, w = (int(v) for v in rng.integers(6, 48, 2))
        write_png(images / f"img{i:02}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (images / "img20b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return bundle, images


def test_dask_example_matches_one_process_and_loads_the_bundle_once_per_worker(image_set):
    pytest.importorskip("distributed")
    sys.path.insert(0, os.path.abspath(EXAMPLES))
    try:
        import dask_batch
    finally:
        sys.path.pop(0)
    from distributed import Client, LocalCluster

    bundle, images = image_set
    paths = dask_batch.image_paths([str(images)])
    assert len(paths) == 41 and paths == sorted(paths)

    # The single-process run: the same function on one model, in one batch of everything.
    local = dask_batch.classify(netc.load(bundle, threads=1), paths, batch=64)

    # (Timeouts, so that a broken worker fails the test instead of hanging it.)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, timeout=120
    ) as cluster, Client(cluster, timeout=120) as client:
        records = list(dask_batch.classify_on_cluster(client, str(bundle), paths, batch=4, shard_size=8, timeout=120))
        stats = dask_batch.worker_stats(client, str(bundle))

    assert [r["image"] for r in records] == paths
    assert [r["image"] for r in local] == paths
    broken = [r for r in records if "error" in r]
    assert len(broken) == 1 and broken[0]["image"].endswith("img20b.png") and "img20b.png" in broken[0]["error"]
    for got, want in zip(records, local):
        assert got.keys() == want.keys()
        if "error" in want:
            assert got["error"] == want["error"]
            continue
        assert got["logits"].dtype == np.float32
        assert got["logits"].tobytes() == want["logits"].tobytes()  # bit for bit
        assert (got["class"], got["prob"]) == (want["class"], want["prob"])

    # Two worker processes, each loaded the bundle exactly once, and the 6 shards between them
    # ran on those models (at least one worker ran several shards on its one model).
    assert len(stats) == 2 and len({s["pid"] for s in stats.values()} | {os.getpid()}) == 3
    assert [s["loads"] for s in stats.values()] == [1, 1]
    assert sum(s["shards"] for s in stats.values()) == 6
    assert max(s["shards"] for s in stats.values()) >= 2


def test_dask_example_as_a_script(image_set, tmp_path):
    """The README's command: a LocalCluster started by the script, JSON lines in input order."""
    import json
    import subprocess

    bundle, images = image_set
    script = os.path.join(EXAMPLES, "dask_batch.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--scheduler" in help_text and "--shard-size" in help_text and "examples:" in help_text

    out = tmp_path / "results.jsonl"
    args = ["--input", str(images), "--workers", "2", "--batch", "4", "--shard-size", "8", "--logits"]
    run = subprocess.run(
        [sys.executable, script, str(bundle), *args, "--output", str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1, run.stderr  # one image is broken
    assert "41 images (1 failed) in 6 shards on 2 workers" in run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    sys.path.insert(0, os.path.abspath(EXAMPLES))
    try:
        import dask_batch
    finally:
        sys.path.pop(0)
    paths = dask_batch.image_paths([str(images)])
    local = dask_batch.classify(netc.load(bundle, threads=1), paths, batch=64)
    assert [line["image"] for line in lines] == paths
    for line, want in zip(lines, local):
        if "error" in want:
            assert line == {"image": want["image"], "error": want["error"]}
        else:
            assert np.array(line["logits"], np.float32).tobytes() == want["logits"].tobytes()
            assert line["class"] == want["class"] and "label" not in line  # 10 classes: no names
