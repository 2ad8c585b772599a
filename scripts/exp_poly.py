#!/usr/bin/env python3
"""Derives netc's `exp` polynomial (`compiler/src/codegen/softmax.rs`, `EXP_POLY`).

`exp(a) = 2^n * e^r` with `r = a - n ln2`, `|r| <= ln2 / 2`. This script finds the degree-5
polynomial with the smallest maximum *relative* error to `e^r` on that interval (Remez exchange in
40-digit arithmetic, mpmath), rounds its coefficients to f32 with the constant term exactly 1 (so
`exp(0) = 1`), then nudges the other coefficients by a few f32 ulps while that lowers the worst
relative error of the polynomial *as the kernels evaluate it*: Horner's rule in f32 with fused
multiply-adds, over a dense grid of f32 `r`. It prints the coefficients, highest degree first (the
order of `EXP_POLY`), and both errors.

Usage: python3 scripts/exp_poly.py   (needs mpmath and numpy; runs in a few seconds)
"""
import mpmath as mp
import numpy as np

DEGREE = 5
mp.mp.dps = 40
half = mp.log(2) / 2


def remez(degree):
    """Coefficients (lowest degree first) and the equioscillating relative error."""
    n = degree + 2
    xs = [half * mp.cos(mp.pi * i / (n - 1)) for i in range(n)][::-1]
    for _ in range(30):
        a = mp.matrix(n, n)
        b = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            for j in range(degree + 1):
                a[i, j] = x**j
            a[i, degree + 1] = (-1) ** i * mp.e**x
            b[i] = mp.e**x
        sol = mp.lu_solve(a, b)
        c = [sol[j] for j in range(degree + 1)]
        err = lambda x: (sum(c[j] * x**j for j in range(degree + 1)) - mp.e**x) / mp.e**x
        grid = [-half + 2 * half * k / 4000 for k in range(4001)]
        v = [err(x) for x in grid]
        inner = [grid[k] for k in range(1, 4000) if (v[k] - v[k - 1]) * (v[k + 1] - v[k]) <= 0]
        ext = [grid[0]] + inner + [grid[-1]]
        if len(ext) != n:
            break
        xs = ext
    return c, sol[degree + 1]


r = np.linspace(-0.34693, 0.34693, 100001).astype(np.float32)
r64 = r.astype(np.float64)
want = np.exp(r64)


def f32_error(cf):
    """Worst relative error of Horner's rule in f32 with FMAs (one rounding per step)."""
    p = np.full_like(r, cf[-1])
    for c in cf[-2::-1]:
        p = (p.astype(np.float64) * r64 + np.float64(c)).astype(np.float32)
    return float(np.max(np.abs(p.astype(np.float64) - want) / want))


coeffs, equi = remez(DEGREE)
cf = np.array([float(c) for c in coeffs], dtype=np.float32)
cf[0] = 1.0
best = f32_error(cf)
improved = True
while improved:
    improved = False
    for j in range(1, DEGREE + 1):
        for direction in (np.inf, -np.inf):
            trial = cf.copy()
            for _ in range(40):
                trial[j] = np.nextafter(trial[j], np.float32(direction))
                e = f32_error(trial)
                if e < best:
                    best, cf, improved = e, trial, True
                    break
print(f"minimax relative error (exact arithmetic): {abs(float(equi)):.3e}")
print(f"worst relative error, f32 Horner with FMAs: {best:.3e}")
print("EXP_POLY, highest degree first:")
print(", ".join(repr(float(c)) for c in cf[::-1]))
