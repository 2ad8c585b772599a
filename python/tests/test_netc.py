"""Tests of the `netc` Python package: a tiny network written here, weights made here, and the
outputs checked against numpy computing the same network from the same weight file."""

import json
import struct
import threading
import time

import numpy as np
import pytest

import netc

TINY = """\
# conv + batchnorm + relu, max pooling, a strided conv, global pooling and a classifier.
network tiny(image: [3, 12, 12]) {
  image |> conv(8, 3, pad = 1) @conv1 |> batchnorm @bn1 |> relu |> maxpool(2, 2)
        |> conv(6, 3, 2, pad = 1) @conv2 |> relu |> global_avgpool |> flatten |> linear(5) @fc
}
"""

SHAPE = (3, 12, 12)


# --- safetensors, read and written with numpy alone (the format: an 8-byte little-endian header
# length, a JSON header of name -> dtype, shape, byte range, then the data).


DTYPES = {"F32": "<f4", "I64": "<i8"}


def read_safetensors(path):
    blob = open(path, "rb").read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    data = blob[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        dtype = "I64" if array.dtype.kind == "i" else "F32"
        raw = np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


# --- the oracle: the tiny network in float64 numpy.


def conv2d(x, w, b, stride=1, pad=0):
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def reference(x, t):
    t = {k: v.astype(np.float64) for k, v in t.items()}
    y = conv2d(x.astype(np.float64), t["conv1.weight"], t["conv1.bias"], 1, 1)
    scale = t["bn1.weight"] / np.sqrt(t["bn1.running_var"] + 1e-5)
    y = (y - t["bn1.running_mean"][None, :, None, None]) * scale[None, :, None, None] + t["bn1.bias"][None, :, None, None]
    y = np.maximum(y, 0)
    n, c, h, w = y.shape
    y = y.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    y = np.maximum(conv2d(y, t["conv2.weight"], t["conv2.bias"], 2, 1), 0)
    y = y.mean(axis=(2, 3))
    return y @ t["fc.weight"].T + t["fc.bias"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny network, and weights with the names and shapes `write_random_weights` gives,
    filled with random values here (BatchNorm statistics included, which He init leaves at 0
    and 1)."""
    d = tmp_path_factory.mktemp("tiny")
    net = d / "tiny.net"
    net.write_text(TINY)
    he = d / "he.safetensors"
    netc.write_random_weights(net, he, seed=3)
    rng = np.random.default_rng(0)
    tensors = {}
    for name, array in read_safetensors(he).items():
        if name.endswith("num_batches_tracked"):
            tensors[name] = array
        elif name.endswith("running_var"):
            tensors[name] = rng.uniform(0.5, 2.0, array.shape)
        else:
            tensors[name] = rng.normal(0.0, 0.5, array.shape)
    weights = d / "tiny.safetensors"
    write_safetensors(weights, tensors)
    return net, weights, read_safetensors(weights)


@pytest.fixture(scope="module")
def model(files):
    net, weights, _ = files
    return netc.compile(net, weights=weights, threads=2)


def batch(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE).astype(np.float32)


def assert_matches(y, ref):
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_write_random_weights_names_every_parameter(files):
    _, _, tensors = files
    assert sorted(tensors) == sorted(
        [f"conv1.{s}" for s in ("weight", "bias")]
        + [f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        + [f"conv2.{s}" for s in ("weight", "bias")]
        + [f"fc.{s}" for s in ("weight", "bias")]
    )
    assert tensors["conv1.weight"].shape == (8, 3, 3, 3)
    assert tensors["fc.weight"].shape == (5, 6)


def test_model_matches_numpy(model, files):
    x = batch(4)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (4, 5)
    assert_matches(y, reference(x, files[2]))
    np.testing.assert_array_equal(model.run(x), y)


def test_batch_sizes_and_attributes(model, files):
    assert model.input_shapes == {"image": SHAPE}
    assert model.output_shapes(7) == [(7, 5)]
    assert model.threads == 2
    x = batch(1, seed=5)
    assert_matches(model(x), reference(x, files[2]))
    assert "tiny" in repr(model)


def test_input_read_in_place_and_left_alone(model):
    x = batch(2)
    before = x.copy()
    x.setflags(write=False)  # a read-only array is fine: the model only reads it
    model(x)
    np.testing.assert_array_equal(x, before)


def test_threads_sharing_one_model_agree(model):
    x = batch(3, seed=9)
    expected = model(x)
    results, errors = [None] * 8, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = model(x)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_wrong_dtype_is_a_type_error_naming_the_shape(model):
    with pytest.raises(TypeError, match=r"float32.*\[N, 3, 12, 12\].*float64"):
        model(batch(2).astype(np.float64))
    with pytest.raises(TypeError, match=r"\[N, 3, 12, 12\].*list"):
        model([[1.0]])


def test_wrong_shape_is_an_error_naming_the_shape(model):
    with pytest.raises(netc.NetcError, match=r"expected shape \[N, 3, 12, 12\].*\[2, 3, 12, 11\]"):
        model(np.zeros((2, 3, 12, 11), np.float32))
    with pytest.raises(ValueError, match=r"\[N, 3, 12, 12\]"):
        model(np.zeros(SHAPE, np.float32))  # no batch dimension
    with pytest.raises(ValueError, match=r"\[N, 3, 12, 12\]"):
        model(np.zeros((0,) + SHAPE, np.float32))
    with pytest.raises(netc.NetcError, match="C-contiguous"):
        model(np.zeros((12, 12, 3, 2), np.float32).transpose(3, 2, 0, 1))
    with pytest.raises(TypeError, match="1 input"):
        model(batch(1), batch(1))


def test_bundle_round_trip(files, model, tmp_path):
    net, weights, tensors = files
    out = tmp_path / "tiny.netc"
    compiled = netc.compile(str(net), weights=str(weights), output=out, threads=1)
    assert out.stat().st_size > 0 and compiled.threads == 1
    loaded = netc.load(out)
    x = batch(3, seed=4)
    y = loaded(x)
    assert_matches(y, reference(x, tensors))
    np.testing.assert_array_equal(compiled(x), y)
    # A bundle is summarised as it runs: BatchNorm folded into the conv.
    ops = [row["op"] for row in netc.summary(out)]
    assert not any("batchnorm" in op for op in ops)


def test_load_errors(tmp_path, files):
    with pytest.raises(netc.NetcError):
        netc.load(tmp_path / "missing.netc")
    bad = tmp_path / "bad.netc"
    bad.write_bytes(b"not a bundle")
    with pytest.raises(netc.NetcError):
        netc.load(bad)
    net, _, _ = files
    with pytest.raises(netc.NetcError):
        netc.compile(net, weights=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="ISA|isa"):
        netc.load(bad, isa="mmx")


def test_check_accepts_a_good_model(files):
    net, _, _ = files
    assert netc.check(TINY) is None
    assert netc.check(net) is None
    assert netc.check(str(net)) is None


def test_check_raises_with_the_rendered_diagnostic(tmp_path):
    bad = TINY.replace("linear(5) @fc", "linear(5) @fc |> bogus")
    with pytest.raises(netc.NetcError) as info:
        netc.check(bad)
    message = str(info.value)
    assert "bogus" in message and "<string>:4:" in message and "^" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, Exception)
    path = tmp_path / "bad.net"
    path.write_text(bad)
    with pytest.raises(netc.NetcError, match=r"bad\.net:4:"):
        netc.check(path)
    with pytest.raises(netc.NetcError, match="cannot read"):
        netc.check(str(tmp_path / "missing.net"))


def test_summary_lists_the_layers(files):
    net, _, _ = files
    rows = netc.summary(net)
    assert [r["name"] for r in rows if r["params"]] == ["conv1", "bn1", "conv2", "fc"]
    conv1 = next(r for r in rows if r["name"] == "conv1")
    assert conv1["output_shape"] == (8, 12, 12)
    assert conv1["params"] == 8 * 3 * 3 * 3 + 8
    assert conv1["macs"] == 8 * 12 * 12 * 3 * 3 * 3
    fc = next(r for r in rows if r["name"] == "fc")
    assert fc["output_shape"] == (5,) and fc["params"] == 5 * 6 + 5 and fc["macs"] == 30
    assert set(rows[0]) == {"name", "op", "output_shape", "params", "macs"}


def test_several_inputs(tmp_path):
    net = tmp_path / "two.net"
    net.write_text("network two(a: [2, 4, 4], b: [2, 4, 4]) {\n  relu(a + b)\n}\n")
    weights = tmp_path / "none.safetensors"
    netc.write_random_weights(net, weights)  # no parameters: an empty file
    m = netc.compile(net, weights)
    assert m.input_shapes == {"a": (2, 4, 4), "b": (2, 4, 4)}
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((3, 2, 4, 4)).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(m(a, b), np.maximum(a + b, 0))
    with pytest.raises(netc.NetcError, match="same batch size"):
        m(a, b[:2])
    with pytest.raises(TypeError, match="2 input"):
        m(a)


def test_gil_released_during_a_run(files):
    """While one thread runs the model, another keeps running Python code. Measured on this
    2-core machine under load: the spinning thread got 50-60% of its solo speed over a 0.3 s run
    with the GIL released, and 13-14% with the run holding the GIL (only the moments before and
    after the run)."""
    net, weights, _ = files
    m = netc.compile(net, weights, threads=1)
    n = 256
    while True:  # a batch whose run takes at least 0.3 s here
        x = batch(n)
        start = time.perf_counter()
        m(x)
        if time.perf_counter() - start >= 0.3 or n >= 1 << 16:
            break
        n *= 2

    def spin(seconds=None, worker=None):
        """Counts loop turns until `seconds` pass or `worker` (started here) ends."""
        stop = [False]
        if worker is None:
            other = threading.Timer(seconds, lambda: stop.__setitem__(0, True))
        else:
            other = threading.Thread(target=lambda: (worker(), stop.__setitem__(0, True)))
        count, start = 0, time.perf_counter()
        other.start()
        while not stop[0]:
            count += 1
        other.join()
        return count, time.perf_counter() - start

    alone, seconds = spin(seconds=0.3)  # the loop's speed with no run beside it
    during, run_seconds = spin(worker=lambda: m(x))
    share = during / (alone / seconds) / run_seconds
    assert share > 0.3, f"Python ran {share:.0%} of a {run_seconds:.2f} s run (batch {n})"
