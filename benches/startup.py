#!/usr/bin/env python3
"""Start-up, thread scaling and executor overhead of netc (issue 10's figures).

Uses the bundles and inputs that compare_ort.py caches in benches/.cache/ (run it once first), and
target/release/netc. Prints, per model:
  * load_ms / jit_ms / first_run_ms  (median of --reps `netc bench --iters 1` processes)
  * cold: process start to logits written, `netc run M.netc --input x.npy --output y.npy` (median)
  * steady-state batch-1 latency, and the issue's target for cold start: 2 x steady + 60 ms
  * speedup from 1 to 2 threads at batch 1 and batch 8 (interleaved rounds, median latencies)
and the executor overhead: runs per second of a tiny model (one 3x3 conv on 3x32x32 and a linear).

    python3 benches/startup.py [--models resnet50,resnet152] [--reps 5]
"""
import argparse, json, statistics, subprocess, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benches" / ".cache"
NETC = ROOT / "target" / "release" / "netc"


def bench(bundle, batch, threads, iters, warmup=3):
    out = subprocess.run([NETC, "bench", bundle, "--batch", str(batch), "--threads", str(threads),
                          "--iters", str(iters), "--warmup", str(warmup), "--format", "json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cold(bundle, inp, out, threads):
    t = time.perf_counter()
    subprocess.run([NETC, "run", bundle, "--input", inp, "--output", out, "--threads", str(threads)],
                   check=True, capture_output=True)
    return (time.perf_counter() - t) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,resnet152")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models.split(","):
            bundle = CACHE / f"{m}.netc"
            starts = [bench(bundle, 1, a.threads, 1, warmup=1) for _ in range(a.reps)]
            colds = [cold(bundle, CACHE / "input_b1.npy", Path(tmp) / "y.npy", a.threads) for _ in range(a.reps)]
            lat = {(b, t): [] for b in (1, 8) for t in (1, a.threads)}
            for r in range(a.reps):
                keys = list(lat) if r % 2 == 0 else list(lat)[::-1]
                for b, t in keys:
                    lat[(b, t)].append(bench(bundle, b, t, 10 if b == 1 else 3)["median_ms"])
            steady = med(lat[(1, a.threads)])
            print(f"{m}: load {med(s['load_ms'] for s in starts):.0f} ms, jit {med(s['jit_ms'] for s in starts):.0f} ms, "
                  f"first run {med(s['first_run_ms'] for s in starts):.0f} ms; cold `netc run` {med(colds):.0f} ms "
                  f"(target 2 x {steady:.1f} + 60 = {2 * steady + 60:.0f} ms)")
            for b in (1, 8):
                s1, s2 = med(lat[(b, 1)]), med(lat[(b, a.threads)])
                print(f"  batch {b}: 1 thread {s1:.1f} ms, {a.threads} threads {s2:.1f} ms, speedup {s1 / s2:.2f}x")
        net = Path(tmp) / "tiny.net"
        net.write_text("network tiny(image: [3, 32, 32]) {\n  image |> conv(8, 3, pad = 1) @conv |> relu\n"
                       "        |> global_avgpool |> flatten |> linear(10) @fc\n}\n")
        w, b = Path(tmp) / "tiny.safetensors", Path(tmp) / "tiny.netc"
        subprocess.run([NETC, "init", net, "-o", w], check=True, capture_output=True)
        subprocess.run([NETC, "compile", net, "--weights", w, "-o", b], check=True, capture_output=True)
        for t in (1, a.threads):
            r = [bench(b, 1, t, 20000, warmup=100)["median_ms"] for _ in range(3)]
            print(f"tiny model, batch 1, {t} thread(s): {1e3 / med(r):.0f} runs/s (median {med(r) * 1e3:.1f} us)")


if __name__ == "__main__":
    main()
