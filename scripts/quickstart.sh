#!/usr/bin/env bash
# The README's main job, one step a line: build netc, write random (He-initialised) ResNet-50
# weights, compile them into a bundle, describe it, and run it on the sample photo.
# Run from anywhere; files are written to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
    printf '\n$ %s\n' "$*"
    "$@"
}

step cargo build --release
step ./target/release/netc init models/resnet50.net -o resnet50.safetensors
step ./target/release/netc compile models/resnet50.net --weights resnet50.safetensors -o resnet50.netc
step ./target/release/netc info resnet50.netc
step ./target/release/netc run resnet50.netc --input models/sample/cat.jpg --top 5
