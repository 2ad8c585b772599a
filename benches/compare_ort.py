#!/usr/bin/env python3
"""Time ONNX Runtime beside netc: same machine, same torchvision models, same weights, one run.

What it does
------------
For every model (alexnet, vgg11/13/16/19, googlenet, resnet18/34/50/101/152, mobilenet_v2,
mobilenet_v3_small, shufflenet_v2_x1_0, efficientnet_b0, regnet_x_400mf, densenet121 by default):

1. Prepare (cached in benches/.cache/, git-ignored by benches/.gitignore):
   build the torchvision model in eval mode (googlenet: aux_logits=False,
   transform_input=False, init_weights=False), fill every floating state_dict
   tensor with "netc-fill v1" (imported from tests/golden/pytorch/make_golden.py,
   the same weights as the golden tests), save the state_dict as
   <model>.safetensors (what `netc --weights` loads), export <model>.onnx
   (TorchScript exporter, dynamo=False, opset 17, dynamic batch axis) and
   PyTorch's logits for the netc-fill "input" tensor at every batch size.
2. ONNX Runtime (CPUExecutionProvider; intra_op_num_threads = --threads,
   inter_op_num_threads = 1, ORT_ENABLE_ALL graph optimisation, sequential
   execution; spinning left at ORT's default unless --ort-no-spin), each in a
   fresh python process that imports onnxruntime and numpy only (no torch):
   * "cold": process start -> session creation -> first run -> logits written
     to .npy -> exit. Reports the wall time seen by this script (comparable to
     `netc run` from process start to output) and the worker's own breakdown
     (import onnxruntime, session creation, first run), median of --cold-reps
     processes. The first process's logits are checked against PyTorch.
   * "bench": --warmup runs, then --iters timed runs (run_with_iobinding, input
     and output bound once) -> median and p90 latency, images/s = batch / median.
3. netc (target/release/netc, or --netc PATH), same weights file:
   * `netc compile models/<m>.net --weights W -o .cache/<m>.netc` (wall time and
     peak RSS), if the binary has a `compile` command;
   * `netc bench models/<m>.net --weights W --batch B --threads T --iters N
     --format json` and, with a bundle, `netc bench .cache/<m>.netc ...`;
   * cold: `netc run .cache/<m>.netc --input in.npy --output out.npy` (or
     `netc run models/<m>.net --weights W ...` without a bundle), wall time from
     process start to exit, median of --cold-reps; logits checked against PyTorch.
   If the binary or its `bench` command is missing, netc is reported as
   unavailable and only ONNX Runtime is measured (the cold `netc run` is skipped
   too: before the JIT its default backend is the slow reference interpreter).
   Per (model, batch) ORT and netc alternate which goes first, to spread
   machine noise; --rounds R repeats the pair R times (reported latencies are
   the median over rounds; the netc/ORT ratio is taken per round, from adjacent
   runs, then the median; every round is kept in the JSON). On this shared KVM
   machine round medians vary by up to +-20% even when no other process runs:
   use --rounds 3 or more for numbers that go in the README.

4. --families: one more run of each engine with per-layer timing (ORT's profiler, median per
   node over --iters runs; `netc bench --profile`, median per kernel), layers matched by their
   torchvision module path (see family_ratios; the MobileNets' and EfficientNet's names match,
   a ResNet block's fused Conv+ReLU nodes mostly do not), summed per netc kernel family (conv.depthwise, conv.gemm1x1, ...,
   "1x1" = gemm1x1 + chanvec) and compared: are the depthwise layers as fast relative to ORT
   as the 1x1 ones? Each engine's per-layer times are scaled to its un-profiled median (ORT's
   profiler adds a few microseconds per node). ORT nodes of layers netc has no kernel for (its
   NCHWc reorders, a squeeze-and-excitation multiply netc folds into the next convolution) are
   listed as "unmatched".

Peak RSS of every child process comes from wait4() (ru_maxrss). Accuracy is
reported as rel_diff = max|y - y_torch| / max|y_torch| over all logits, plus
whether the argmax of every batch row agrees. Latency percentiles use the
nearest-rank definition (p90 = sorted[ceil(0.9 n) - 1]).

Install (CPU only; see the header of tests/golden/pytorch/make_golden.py for torch)
------------------------------------------------------------------------------------
    # torch 2.14.1 + torchvision 0.29.2 + numpy + safetensors as in make_golden.py, then
    pip install onnxruntime onnx        # tested: onnxruntime 1.32.0, onnx 1.23.2
    cargo build --release               # target/release/netc

Run (from anywhere; paths are relative to the repository)
---------------------------------------------------------
    python3 benches/compare_ort.py                                  # everything, batch 1 and 8
    python3 benches/compare_ort.py --models resnet18,resnet50 --batch 1,8 --threads 2 --iters 50
    python3 benches/compare_ort.py --models resnet50 --batch 1 --no-netc   # ORT only
    python3 benches/compare_ort.py --out results.json

Prints a latency table (model, batch, ORT median/p90, netc median/p90, netc/ORT
ratio, the same for the bundle) and a cold-start/compile/RSS table; writes all
results as JSON to --out (default benches/.cache/compare_ort.json).
Preparing all eleven models takes about 2 minutes and 6 GB of disk in
benches/.cache/ (each model's weights twice, as .safetensors and as .onnx; the
VGGs are 0.53-0.57 GB each per copy); --refresh rebuilds the cache. A smoke
test of the whole list: --batch 1 --iters 3 --warmup 1 --cold-reps 1.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
GOLDEN = REPO / "tests" / "golden" / "pytorch" / "make_golden.py"
ALL_MODELS = ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet",
              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
              "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0", "efficientnet_b0",
              "regnet_x_400mf", "densenet121"]
OPSET = 17
HW = 224
CACHE_VERSION = 1  # bump when the prepared artefacts change meaning


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(sorted_vals, q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, math.ceil(q * len(sorted_vals)) - 1)
    return sorted_vals[k]


def compare(y: np.ndarray, ref: np.ndarray) -> dict:
    if y.shape != ref.shape:
        return {"ok": False, "error": f"shape {list(y.shape)} != {list(ref.shape)}"}
    if not np.all(np.isfinite(y)):
        return {"ok": False, "error": "non-finite output"}
    diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    rel = float(diff.max() / max(np.abs(ref).max(), 1e-30))
    argmax = bool(np.array_equal(y.argmax(axis=1), ref.argmax(axis=1)))
    return {"ok": True, "max_abs_diff": float(diff.max()), "rel_diff": rel, "argmax_agree": argmax}


# ---------------------------------------------------------------------------
# Child processes: wall time and peak RSS via wait4, with a timeout
# ---------------------------------------------------------------------------
# The child is started by a tiny `python3 -S` helper that posix_spawns it and
# wait4()s: a process forked from this (large, torch-holding) interpreter would
# inherit its RSS high-water mark across exec, so ru_maxrss would report our own
# size instead of the child's. The helper also times spawn-to-exit without
# Python's start-up in the measurement.
SPAWN_HELPER = r"""
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, st, ru = os.wait4(pid, 0)
t1 = time.perf_counter()
with open(out, "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(st), "wall_s": t1 - t0,
               "maxrss_mb": ru.ru_maxrss / 1024.0, "cpu_s": ru.ru_utime + ru.ru_stime}, f)
"""


def run_proc(cmd, timeout: float, env=None) -> dict:
    """Run cmd; return rc, wall_s (spawn to exit), maxrss_mb, cpu_s, stdout, stderr."""
    import signal
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".json") as rj:
        try:
            p = subprocess.Popen([sys.executable, "-S", "-c", SPAWN_HELPER, rj.name]
                                 + [str(c) for c in cmd], stdout=out, stderr=err, env=env,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return {"rc": None, "error": str(e), "wall_s": 0.0, "maxrss_mb": None,
                    "stdout": "", "stderr": str(e), "timed_out": False}
        timed_out = False
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)  # the helper's own session: helper + child
            p.wait()
        out.seek(0)
        err.seek(0)
        res = {"rc": None, "wall_s": 0.0, "maxrss_mb": None, "cpu_s": None}
        try:
            res.update(json.loads(Path(rj.name).read_text() or "{}"))
        except (OSError, json.JSONDecodeError):
            pass
        res["stdout"] = out.read().decode("utf-8", "replace")
        res["stderr"] = err.read().decode("utf-8", "replace")
        if res["rc"] is None and not timed_out:
            res["stderr"] += f"\n(spawn helper exited with {p.returncode})"
        res["timed_out"] = timed_out
        return res


def tail(text: str, n: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def last_json_object(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    try:  # pretty-printed JSON
        start = text.index("{")
        return json.loads(text[start:])
    except (ValueError, json.JSONDecodeError):
        return None


def worker_env() -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"  # numpy's BLAS must not spin threads beside ORT's pool
    return env


# ---------------------------------------------------------------------------
# ONNX Runtime worker (runs in its own process; imports onnxruntime + numpy only)
# ---------------------------------------------------------------------------
def ort_worker(argv) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(prog="compare_ort.py _ort_worker")
    ap.add_argument("mode", choices=["cold", "bench", "profile"])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-spin", action="store_true")
    ap.add_argument("--output")
    a = ap.parse_args(argv)

    import onnxruntime as ort

    t_import = time.perf_counter()
    x = np.load(a.input)
    t_input = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if a.no_spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if a.mode == "profile":
        import tempfile

        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort_profile")
    sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
    t_session = time.perf_counter()
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    y = sess.run([out_name], {in_name: x})[0]
    t_first = time.perf_counter()
    if a.output:
        np.save(a.output, y)
    t_out = time.perf_counter()
    res = {
        "onnxruntime": ort.__version__,
        "device": ort.get_device(),
        "providers": sess.get_providers(),
        "import_ms": (t_import - t_start) * 1e3,
        "load_input_ms": (t_input - t_import) * 1e3,
        "session_ms": (t_session - t_input) * 1e3,
        "first_run_ms": (t_first - t_session) * 1e3,
        "session_plus_first_run_ms": (t_first - t_input) * 1e3,
        "in_process_to_output_ms": (t_out - t_start) * 1e3,
    }
    if a.mode == "profile":
        for _ in range(a.warmup + a.iters):
            sess.run([out_name], {in_name: x})
        trace = Path(sess.end_profiling())
        per_node = {}
        for ev in json.loads(trace.read_text()):
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                per_node.setdefault(ev["name"][: -len("_kernel_time")], []).append(ev["dur"] / 1e3)
        trace.unlink()
        # Each node's median over the timed runs (the first `warmup` runs left out).
        res["node_ms"] = {n: statistics.median(v[a.warmup:] or v) for n, v in per_node.items()}
    if a.mode == "bench":
        io = sess.io_binding()
        xv = ort.OrtValue.ortvalue_from_numpy(x)
        yv = ort.OrtValue.ortvalue_from_shape_and_type(list(y.shape), np.float32)
        io.bind_ortvalue_input(in_name, xv)
        io.bind_ortvalue_output(out_name, yv)
        for _ in range(a.warmup):
            sess.run_with_iobinding(io)
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter_ns()
            sess.run_with_iobinding(io)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        s = sorted(times)
        med = statistics.median(s)
        res.update({
            "batch": int(x.shape[0]), "threads": a.threads, "iters": a.iters,
            "warmup": a.warmup, "median_ms": med, "p90_ms": percentile(s, 0.9),
            "min_ms": s[0], "mean_ms": statistics.fmean(s), "images_per_s": x.shape[0] * 1e3 / med,
            "times_ms": [round(t, 4) for t in times],
        })
    print(json.dumps(res))
    return 0


def ort_call(mode: str, onnx: Path, inp: Path, args, output: Path = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_ort_worker", mode,
           "--onnx", onnx, "--input", inp, "--threads", args.threads,
           "--iters", args.iters, "--warmup", args.warmup]
    if args.ort_no_spin:
        cmd.append("--no-spin")
    if output is not None:
        cmd += ["--output", output]
    r = run_proc(cmd, args.timeout, env=worker_env())
    j = last_json_object(r["stdout"]) if r.get("rc") == 0 else None
    if j is None:
        return {"ok": False, "error": tail(r["stderr"] or r.get("error", "")),
                "rc": r.get("rc"), "timed_out": r["timed_out"]}
    j.update({"ok": True, "process_wall_ms": r["wall_s"] * 1e3, "maxrss_mb": r["maxrss_mb"],
              "cpu_s": r["cpu_s"]})
    return j


# ---------------------------------------------------------------------------
# netc
# ---------------------------------------------------------------------------
class Netc:
    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        self.version = None
        self.has_bench = self.has_compile = False
        self.why = None
        if not path.is_file():
            self.why = f"{path} not found (cargo build --release)"
            return
        r = run_proc([path, "--version"], 60)
        self.version = r["stdout"].strip() or None
        self.has_bench = run_proc([path, "bench", "--help"], 60).get("rc") == 0
        self.has_compile = run_proc([path, "compile", "--help"], 60).get("rc") == 0
        if not self.has_bench:
            self.why = f"{path} has no `bench` command yet"

    @property
    def available(self) -> bool:
        return self.has_bench

    def run(self, argv) -> dict:
        r = run_proc([self.path] + [str(a) for a in argv], self.timeout)
        r["cmd"] = " ".join(str(a) for a in ["netc"] + list(argv))
        return r

    def compile(self, net: Path, weights: Path, bundle: Path) -> dict:
        r = self.run(["compile", net, "--weights", weights, "-o", bundle])
        ok = r.get("rc") == 0 and bundle.is_file()
        res = {"ok": ok, "cmd": r["cmd"], "wall_s": r["wall_s"], "maxrss_mb": r["maxrss_mb"],
               "cpu_s": r["cpu_s"]}
        if ok:
            res["bundle_bytes"] = bundle.stat().st_size
        else:
            res["error"] = tail(r["stderr"] or r["stdout"])
        return res

    def bench(self, target: Path, weights, batch: int, args, profile: bool = False) -> dict:
        argv = ["bench", target]
        if weights is not None:
            argv += ["--weights", weights]
        argv += ["--batch", batch, "--threads", args.threads, "--iters", args.iters,
                 "--format", "json"]
        if profile:
            argv.append("--profile")
        r = self.run(argv)
        j = last_json_object(r["stdout"]) if r.get("rc") == 0 else None
        if j is None or "median_ms" not in j:
            return {"ok": False, "cmd": r["cmd"], "rc": r.get("rc"), "timed_out": r["timed_out"],
                    "error": tail(r["stderr"] or r["stdout"])}
        j.update({"ok": True, "cmd": r["cmd"], "process_wall_s": r["wall_s"],
                  "maxrss_mb": r["maxrss_mb"], "cpu_s": r["cpu_s"]})
        return j

    def cold(self, target: Path, weights, inp: Path, out: Path, threads: int) -> dict:
        argv = ["run", target]
        if weights is not None:
            argv += ["--weights", weights]
        argv += ["--input", inp, "--output", out, "--threads", threads]
        if out.exists():
            out.unlink()
        r = self.run(argv)
        ok = r.get("rc") == 0 and out.is_file()
        res = {"ok": ok, "cmd": r["cmd"], "process_wall_ms": r["wall_s"] * 1e3,
               "maxrss_mb": r["maxrss_mb"], "cpu_s": r["cpu_s"]}
        if not ok:
            res["error"] = tail(r["stderr"] or r["stdout"])
        return res


# ---------------------------------------------------------------------------
# Preparation (torch side): weights, ONNX, inputs, PyTorch logits
# ---------------------------------------------------------------------------
def load_golden():
    import importlib.util

    spec = importlib.util.spec_from_file_location("netc_make_golden", GOLDEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_torch_model(golden, name: str):
    import torchvision

    tvm = torchvision.models
    if name == "googlenet":
        model = tvm.googlenet(weights=None, aux_logits=False, transform_input=False,
                              init_weights=False)
        expected = golden.GOOGLENET_NO_AUX_PARAMS
    else:
        model = getattr(tvm, name)(weights=None)
        expected = golden.MODELS[name][3]
    params = sum(p.numel() for p in model.parameters())
    if params != expected:
        raise RuntimeError(f"{name}: {params} parameters, expected {expected}")
    return model.eval(), params


def input_path(batch: int) -> Path:
    return CACHE / f"input_b{batch}.npy"


def prepare(name: str, batches, args, state: dict) -> dict:
    """Create (or reuse) the cached artefacts of one model; return its prepare record."""
    paths = {
        "weights": CACHE / f"{name}.safetensors",
        "onnx": CACHE / f"{name}.onnx",
        **{f"torch_b{b}": CACHE / f"{name}.torch_b{b}.npy" for b in batches},
    }
    meta_path = CACHE / f"{name}.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "golden" not in state:
        state["golden"] = load_golden()
        import torch
        import torchvision

        state["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    golden = state["golden"]
    key = {"cache_version": CACHE_VERSION, "generator": golden.GENERATOR, "opset": OPSET,
           **state["versions"]}
    if (not args.refresh and meta.get("key") == key
            and all(p.exists() for p in paths.values())
            and all(input_path(b).exists() for b in batches)):
        return meta
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for b in batches:
        if args.refresh or not input_path(b).exists():
            np.save(input_path(b), golden.make_input([b, 3, HW, HW]).numpy())
    model, params = build_torch_model(golden, name)
    golden.fill_state_dict(model)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(paths["weights"]))
    del sd
    x1 = torch.from_numpy(np.load(input_path(batches[0])))
    export_kw = dict(opset_version=OPSET, input_names=["input"], output_names=["logits"],
                     dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                     do_constant_folding=True)
    import inspect
    import warnings

    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        export_kw["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x1,), str(paths["onnx"]), **export_kw)
    import onnx

    onnx.checker.check_model(str(paths["onnx"]))
    with torch.no_grad():
        for b in batches:
            y = model(torch.from_numpy(np.load(input_path(b)))).numpy()
            np.save(paths[f"torch_b{b}"], np.ascontiguousarray(y, dtype=np.float32))
    del model
    import gc

    gc.collect()
    meta = {
        "key": key, "params": params, "onnx": onnx.__version__,
        "weights_bytes": paths["weights"].stat().st_size,
        "onnx_bytes": paths["onnx"].stat().st_size,
        "prepare_s": time.perf_counter() - t0,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def cpu_info() -> dict:
    info = {"machine": platform.machine(), "nproc": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and "model_name" not in info:
                info["model_name"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and "flags" not in info:
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(f for f in flags if f in {
                    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                    "amx_bf16", "amx_int8", "waitpkg", "hypervisor"})
    except OSError:
        pass
    return info


def cpu_times():
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / hz, (v[7] if len(v) > 7 else 0) / hz


def wait_quiet(max_wait: float, threshold: float = 0.10) -> float:
    """Wait (at most max_wait s) until the machine's busy CPU share over a 1 s window is
    below threshold; return the seconds waited."""
    t0 = time.perf_counter()
    while max_wait > 0 and time.perf_counter() - t0 < max_wait:
        c0, w0 = cpu_times(), time.perf_counter()
        time.sleep(1.0)
        c1, w1 = cpu_times(), time.perf_counter()
        if c0 is None or c1 is None:
            break
        if (c1[0] - c0[0]) / (os.cpu_count() * (w1 - w0)) < threshold:
            break
    return time.perf_counter() - t0


QUIET_WAIT = 0.0  # set from --quiet-wait


def with_load(fn) -> dict:
    """fn()'s result plus machine-noise indicators for its duration: the 1-minute load
    average before/after, and other_cpu_frac = CPU time used by everything except the
    measured child process (other processes, this script, hypervisor steal) divided by
    cores x wall time. Near 0 on a quiet machine."""
    waited = wait_quiet(QUIET_WAIT)
    before = os.getloadavg()[0]
    c0, t0 = cpu_times(), time.perf_counter()
    res = fn()
    c1, wall = cpu_times(), time.perf_counter() - t0
    res["loadavg_1m"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    if QUIET_WAIT > 0:
        res["quiet_wait_s"] = round(waited, 1)
    if c0 and c1 and res.get("cpu_s") is not None and wall > 0:
        other = (c1[0] - c0[0]) - res["cpu_s"]
        res["other_cpu_frac"] = round(max(other, 0.0) / (os.cpu_count() * wall), 3)
        res["steal_frac"] = round((c1[1] - c0[1]) / (os.cpu_count() * wall), 3)
    return res


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def cold_runs(fn, reps: int):
    """Call fn(rep) reps times; return (list of results, first result)."""
    runs = [fn(i) for i in range(reps)]
    return runs, runs[0]


def bench_model(name: str, mi: int, batches, args, netc: Netc, state: dict) -> dict:
    log(f"[{name}] preparing")
    meta = prepare(name, batches, args, state)
    weights = CACHE / f"{name}.safetensors"
    onnx_path = CACHE / f"{name}.onnx"
    net = REPO / "models" / f"{name}.net"
    rec = {"params": meta.get("params"), "weights_bytes": meta.get("weights_bytes"),
           "onnx_bytes": meta.get("onnx_bytes"), "batches": {}}
    bundle = None
    if netc.available and netc.has_compile:
        bundle = CACHE / f"{name}.netc"
        log(f"[{name}] netc compile")
        rec["netc_compile"] = netc.compile(net, weights, bundle)
        if not rec["netc_compile"]["ok"]:
            log(f"[{name}] netc compile failed: {rec['netc_compile']['error']}")
            bundle = None

    for bi, b in enumerate(batches):
        ref = np.load(CACHE / f"{name}.torch_b{b}.npy")
        inp = input_path(b)
        e = {"ort": {}, "netc": {}, "netc_bundle": {}}
        # --- cold starts (process start to output) ------------------------
        ort_out = CACHE / f"{name}.ort_b{b}.npy"

        def ort_cold(i):
            return with_load(lambda: ort_call("cold", onnx_path, inp, args,
                                              output=ort_out if i == 0 else None))

        log(f"[{name} b{b}] ORT cold x{args.cold_reps}")
        if ort_out.exists():
            ort_out.unlink()
        runs, first = cold_runs(ort_cold, args.cold_reps)
        e["ort"]["cold"] = {
            "ok": all(r["ok"] for r in runs),
            "process_wall_ms": med([r.get("process_wall_ms") for r in runs]),
            "import_ms": med([r.get("import_ms") for r in runs]),
            "session_ms": med([r.get("session_ms") for r in runs]),
            "first_run_ms": med([r.get("first_run_ms") for r in runs]),
            "session_plus_first_run_ms": med([r.get("session_plus_first_run_ms") for r in runs]),
            "maxrss_mb": med([r.get("maxrss_mb") for r in runs]),
            "max_other_cpu_frac": max((r.get("other_cpu_frac") or 0) for r in runs),
            "runs": runs,
        }
        if first["ok"] and ort_out.exists():
            e["ort"]["check"] = compare(np.load(ort_out), ref)
            state.setdefault("ort_version", first.get("onnxruntime"))
            state.setdefault("ort_device", first.get("device"))
        else:
            e["ort"]["check"] = {"ok": False, "error": first.get("error")}
            log(f"[{name} b{b}] ORT failed: {first.get('error')}")
        if netc.available:
            target, tw = (bundle, None) if bundle else (net, weights)
            netc_out = CACHE / f"{name}.netc_b{b}.npy"
            log(f"[{name} b{b}] netc cold x{args.cold_reps} ({target.name})")
            runs = [with_load(lambda: netc.cold(target, tw, inp,
                                                netc_out if i == 0 else CACHE / "scratch.npy",
                                                args.threads)) for i in range(args.cold_reps)]
            key = "netc_bundle" if bundle else "netc"
            e[key]["cold"] = {
                "ok": all(r["ok"] for r in runs),
                "process_wall_ms": med([r["process_wall_ms"] for r in runs]),
                "maxrss_mb": med([r["maxrss_mb"] for r in runs]),
                "max_other_cpu_frac": max((r.get("other_cpu_frac") or 0) for r in runs),
                "runs": runs,
            }
            if runs[0]["ok"]:
                e[key]["check"] = compare(np.load(netc_out), ref)
            else:
                log(f"[{name} b{b}] netc run failed: {runs[0].get('error')}")
        # --- steady-state latency, alternating order ---------------------
        ort_rounds, netc_rounds, bundle_rounds = [], [], []
        for r in range(args.rounds):
            order = ["ort", "netc"] if (mi + bi + r) % 2 == 0 else ["netc", "ort"]
            for eng in order:
                if eng == "ort":
                    log(f"[{name} b{b}] ORT bench round {r + 1}")
                    ort_rounds.append(with_load(lambda: ort_call("bench", onnx_path, inp, args)))
                elif netc.available:
                    log(f"[{name} b{b}] netc bench round {r + 1}")
                    netc_rounds.append(with_load(lambda: netc.bench(net, weights, b, args)))
                    if bundle:
                        bundle_rounds.append(with_load(lambda: netc.bench(bundle, None, b, args)))
        for key, rounds in (("ort", ort_rounds), ("netc", netc_rounds),
                            ("netc_bundle", bundle_rounds)):
            if not rounds:
                continue
            good = [x for x in rounds if x["ok"]]
            e[key]["bench"] = {
                "ok": len(good) == len(rounds),
                "median_ms": med([x["median_ms"] for x in good]),
                "p90_ms": med([x["p90_ms"] for x in good]),
                "images_per_s": med([x["images_per_s"] for x in good]),
                "maxrss_mb": med([x.get("maxrss_mb") for x in good]),
                "max_loadavg_1m": max(max(x["loadavg_1m"]) for x in rounds),
                "max_other_cpu_frac": max((x.get("other_cpu_frac") or 0) for x in rounds),
                "rounds": rounds,
            }
            if not good:
                log(f"[{name} b{b}] {key} bench failed: {rounds[0].get('error')}")
        # ratio: per round (adjacent in time, so slow drift of the machine cancels), then
        # the median over rounds
        for key, rounds in (("netc", netc_rounds), ("netc_bundle", bundle_rounds)):
            per_round = [n["median_ms"] / o["median_ms"] for n, o in zip(rounds, ort_rounds)
                         if n["ok"] and o["ok"]]
            e[f"{key}_over_ort"] = med(per_round)
            e[f"{key}_over_ort_rounds"] = per_round
        if args.families and netc.available:
            log(f"[{name} b{b}] per-family profiles")
            ort_prof = ort_call("profile", onnx_path, inp, args)
            netc_prof = netc.bench(bundle or net, None if bundle else weights, b, args, profile=True)
            ort_med = e["ort"].get("bench", {}).get("median_ms")
            netc_med = e["netc_bundle" if bundle else "netc"].get("bench", {}).get("median_ms")
            if ort_prof["ok"] and netc_prof["ok"] and ort_med and netc_med:
                e["families"] = family_ratios(netc_prof["profile"], ort_prof["node_ms"], netc_med, ort_med)
                e["profiles"] = {"netc": netc_prof["profile"], "ort_node_ms": ort_prof["node_ms"]}
            else:
                log(f"[{name} b{b}] profiles failed: {ort_prof.get('error') or netc_prof.get('error')}")
        rec["batches"][str(b)] = e
    return rec


def torch_module(ort_node: str) -> str:
    """The torchvision module path of an ONNX node named by the TorchScript exporter:
    `/features/features.2/conv/conv.0/conv.0.2/Clip` -> `features.2.conv.0.2` (each segment
    `a.b.c` repeats its parent's path and adds the last component)."""
    parts = []
    for seg in ort_node.split("/"):
        if seg and seg[0].islower() and all(c.isalnum() or c in "._" for c in seg):
            parts.append(seg.rsplit(".", 1)[-1] if "." in seg else seg)
    return ".".join(parts)


def layer_key(module: str) -> str:
    """The layer a module belongs to: its path without the last component, so a conv, its
    BatchNorm and its activation (`features.2.conv.0.0/.1/.2`: ORT names the fused node after the
    activation, netc after the conv) meet."""
    return module.rsplit(".", 1)[0] if "." in module else module


def family_ratios(netc_rows, ort_nodes: dict, netc_median: float, ort_median: float) -> dict:
    """netc's kernels and ORT's nodes summed per netc kernel family. Each ORT node is charged to
    one netc kernel: the one named by the node's torchvision module path (an unfused conv:
    `features.2.0.block.0.0`), else the only one in its layer (see layer_key: the conv of a
    MobileNet's fused Conv+Clip node, named after the Clip `features.2.conv.0.2`, or the SiLU node
    after an EfficientNet conv); nodes that fit no kernel or several (ORT's NCHWc reorders, the
    squeeze-and-excitation multiply netc folds into the next convolution, a ResNet block's ReLUs)
    are "unmatched". Each engine's per-kernel times are scaled so that they sum to its
    un-profiled median latency (ORT's profiler adds a few microseconds to every node). "1x1" is
    conv.gemm1x1 + conv.chanvec, the 1x1 layers of the MobileNets and EfficientNet."""
    netc_ms, family, by_layer = {}, {}, {}
    for r in netc_rows:
        name = r["kernel"].split(" ")[0]
        netc_ms[name] = netc_ms.get(name, 0.0) + r["ms"]
        family[name] = r["implementation"].rsplit(".", 1)[0]
        by_layer.setdefault(layer_key(name), set()).add(name)
    ort_ms, unmatched = {}, 0.0
    for node, ms in ort_nodes.items():
        module = torch_module(node)
        same_layer = by_layer.get(layer_key(module), set())
        kernel = module if module in netc_ms else (next(iter(same_layer)) if len(same_layer) == 1 else None)
        if kernel is None:
            unmatched += ms
        else:
            ort_ms[kernel] = ort_ms.get(kernel, 0.0) + ms
    ns = netc_median / sum(netc_ms.values())
    os_ = ort_median / (sum(ort_ms.values()) + unmatched)
    fams = {}
    for name, ms in netc_ms.items():
        f = fams.setdefault(family[name], [0.0, 0.0, 0])
        f[0] += ms * ns
        f[1] += ort_ms.get(name, 0.0) * os_
        f[2] += 1
    if unmatched:
        fams["unmatched"] = [0.0, unmatched * os_, 0]
    ones = [fams[f] for f in ("conv.gemm1x1", "conv.chanvec") if f in fams]
    if ones:
        fams["1x1"] = [sum(f[0] for f in ones), sum(f[1] for f in ones), sum(f[2] for f in ones)]
    return {f: {"netc_ms": v[0], "ort_ms": v[1], "kernels": v[2],
                "netc_over_ort": v[0] / v[1] if v[1] else None} for f, v in fams.items()}


def fmt(v, spec=".2f", width=8):
    return f"{v:{width}{spec}}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def print_tables(results: dict, batches) -> None:
    n = results["netc"]
    print()
    print(f"ONNX Runtime {results['versions'].get('onnxruntime')} "
          f"({results['versions'].get('ort_device')}), {results['config']['threads']} threads; "
          + (f"netc: {n['version']} (compile: {'yes' if n['compile'] else 'no'})" if n["available"]
             else f"netc unavailable: {n['why']}"))
    print("Steady-state latency (ms; netc/ORT = ratio of medians, median over rounds, "
          "< 1 means netc is faster; "
          "bndl = the compiled .netc bundle; ORT rel = ORT vs PyTorch max|diff|/max|ref|; "
          "noise = CPU share used by other processes while timing)")
    hdr = (f"{'model':10} {'batch':>5} {'ORT med':>8} {'ORT p90':>8} {'netc med':>8} "
           f"{'netc p90':>8} {'netc/ORT':>8} {'bndl med':>8} {'bndl/ORT':>8} {'ORT rel':>8} "
           f"{'noise':>6}")
    print(hdr)
    print("-" * len(hdr))
    for name, rec in results["models"].items():
        if "error" in rec:
            print(f"{name:10} error: {rec['error']}")
            continue
        for b, e in rec["batches"].items():
            ob, nb, bb = (e[k].get("bench", {}) for k in ("ort", "netc", "netc_bundle"))
            print(f"{name:10} {b:>5} {fmt(ob.get('median_ms'))} {fmt(ob.get('p90_ms'))} "
                  f"{fmt(nb.get('median_ms'))} {fmt(nb.get('p90_ms'))} "
                  f"{fmt(e.get('netc_over_ort'), '.2f')} {fmt(bb.get('median_ms'))} "
                  f"{fmt(e.get('netc_bundle_over_ort'), '.2f')} "
                  f"{fmt(e['ort'].get('check', {}).get('rel_diff'), '.1e')} "
                  f"{fmt(max((e[k].get('bench', {}).get('max_other_cpu_frac') or 0) for k in ('ort', 'netc', 'netc_bundle')), '.0%', 6)}")
    fam_rows = [(name, b, f, v) for name, rec in results["models"].items()
                for b, e in rec.get("batches", {}).items() for f, v in e.get("families", {}).items()]
    if fam_rows:
        print()
        print("By kernel family (--families; one profiled run per engine: netc bench --profile and "
              "ORT's profiler, matched by torchvision layer, each scaled to its un-profiled median)")
        hdr = f"{'model':18} {'batch':>5} {'family':16} {'kernels':>7} {'netc ms':>8} {'ORT ms':>8} {'netc/ORT':>8}"
        print(hdr)
        print("-" * len(hdr))
        for name, b, f, v in fam_rows:
            print(f"{name:18} {b:>5} {f:16} {v['kernels']:>7} {fmt(v['netc_ms'], '.3f')} "
                  f"{fmt(v['ort_ms'], '.3f')} {fmt(v['netc_over_ort'], '.2f')}")
    print()
    print("Cold start: process start to logits written (ms, median of --cold-reps); "
          "ORT sess+1st = session creation + first run inside the process")
    hdr = (f"{'model':10} {'batch':>5} {'ORT proc':>9} {'ORT sess+1st':>12} {'netc run':>9} "
           f"{'netc rel':>8} {'compile s':>9} {'RSS ORT':>8} {'RSS netc':>8}")
    print(hdr)
    print("-" * len(hdr))
    for name, rec in results["models"].items():
        if "error" in rec:
            continue
        for b, e in rec["batches"].items():
            oc = e["ort"].get("cold", {})
            nk = "netc_bundle" if "cold" in e["netc_bundle"] else "netc"
            nc = e[nk].get("cold", {})
            nchk = e[nk].get("check", {})
            rss_n = e[nk].get("bench", {}).get("maxrss_mb") or nc.get("maxrss_mb")
            print(f"{name:10} {b:>5} {fmt(oc.get('process_wall_ms'), '.0f', 9)} "
                  f"{fmt(oc.get('session_plus_first_run_ms'), '.0f', 12)} "
                  f"{fmt(nc.get('process_wall_ms'), '.0f', 9)} {fmt(nchk.get('rel_diff'), '.1e')} "
                  f"{fmt(rec.get('netc_compile', {}).get('wall_s'), '.2f', 9)} "
                  f"{fmt(e['ort'].get('bench', {}).get('maxrss_mb'), '.0f')} {fmt(rss_n, '.0f')}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_ort_worker":
        return ort_worker(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ALL_MODELS),
                    help="comma-separated subset of: " + ",".join(ALL_MODELS))
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="ORT warm-up runs (default 5)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating ORT/netc rounds per (model, batch) (default 1)")
    ap.add_argument("--cold-reps", type=int, default=3,
                    help="cold-start processes per engine and batch (default 3)")
    ap.add_argument("--netc", type=Path, default=REPO / "target" / "release" / "netc")
    ap.add_argument("--no-netc", action="store_true", help="time ONNX Runtime only")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="session.intra_op.allow_spinning=0 (ORT default is to spin)")
    ap.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                    help="before each timed run wait up to S seconds for the machine to be "
                    "idle (< 10%% busy over 1 s); for shared machines (default 0: no wait)")
    ap.add_argument("--timeout", type=float, default=3600, help="per child process, seconds")
    ap.add_argument("--refresh", action="store_true", help="rebuild the cached artefacts")
    ap.add_argument("--families", action="store_true",
                    help="also profile both engines per layer and compare them per netc kernel "
                    "family (depthwise against 1x1 layers, say)")
    ap.add_argument("--out", type=Path, default=CACHE / "compare_ort.json")
    args = ap.parse_args()

    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in ALL_MODELS:
            ap.error(f"unknown model {m!r}; known: {', '.join(ALL_MODELS)}")
    batches = [int(b) for b in args.batch.split(",") if b]
    if not batches or min(batches) < 1 or min(args.iters, args.rounds, args.cold_reps) < 1:
        ap.error("batch sizes, --iters, --rounds and --cold-reps must be >= 1")
    CACHE.mkdir(parents=True, exist_ok=True)

    if args.no_netc:
        netc = Netc.__new__(Netc)
        netc.path, netc.version, netc.has_bench, netc.has_compile = args.netc, None, False, False
        netc.why = "--no-netc"
    else:
        netc = Netc(args.netc, args.timeout)
    if not netc.available:
        log(f"netc unavailable: {netc.why}; timing ONNX Runtime only")

    state = {}
    results = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"models": models, "batches": batches, "threads": args.threads,
                   "iters": args.iters, "ort_warmup": args.warmup, "rounds": args.rounds,
                   "cold_reps": args.cold_reps, "ort_allow_spinning": not args.ort_no_spin,
                   "quiet_wait_s": args.quiet_wait,
                   "opset": OPSET, "input_hw": HW},
        "machine": cpu_info(),
        "netc": {"path": str(netc.path), "version": netc.version, "available": netc.available,
                 "bench": netc.has_bench, "compile": netc.has_compile, "why": netc.why},
        "models": {},
    }
    load0 = os.getloadavg()[0]
    results["machine"]["loadavg_1m_start"] = round(load0, 2)
    if load0 > 0.5:
        log(f"warning: 1-minute load average is {load0:.2f} before starting; other processes "
            f"compete for the {os.cpu_count()} cores and will inflate the latencies")
    t0 = time.time()
    for mi, name in enumerate(models):
        try:
            results["models"][name] = bench_model(name, mi, batches, args, netc, state)
        except Exception as ex:  # keep going: one broken model must not lose the others
            import traceback

            traceback.print_exc()
            results["models"][name] = {"error": f"{type(ex).__name__}: {ex}"}
    results["versions"] = {
        "python": platform.python_version(), "numpy": np.__version__,
        **state.get("versions", {}), "onnxruntime": state.get("ort_version"),
        "ort_device": state.get("ort_device"),
    }
    try:
        import onnx

        results["versions"]["onnx"] = onnx.__version__
    except ImportError:
        pass
    results["elapsed_s"] = time.time() - t0
    results["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print_tables(results, batches)
    busy = [f"{n} b{b} {k}" for n, rec in results["models"].items() for b, e in
            rec.get("batches", {}).items() for k in ("ort", "netc", "netc_bundle")
            if e[k].get("bench", {}).get("max_other_cpu_frac", 0) > 0.05]
    if busy:
        print("\nwarning: other processes (or hypervisor steal) used more than 5% of the CPU "
              f"during: {', '.join(busy)}; those latencies are inflated, re-run on a quiet machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out} ({results['elapsed_s']:.0f} s)")
    return 0 if all("error" not in r for r in results["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
