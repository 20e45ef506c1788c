#!/usr/bin/env python
"""A large JPEG to a small model input: decoded at reduced size (libjpeg's DCT scaling,
Pillow's `Image.draft`) against a full decode, per image (issue 18).

    python benchmarks/bench_decode_reduced.py [--image FILE.jpg] [--repeats 30]
                                              [--policies 96x96:3,96x96:1,224x224:3:center-crop]

The image is the 1920x1080 photo collage of scripts/make_image_set.py (made in a temporary
folder; scikit-image needed) unless --image is given. Each policy is timed three ways, all
through `digitkit.images.pixels.pixels_from_bytes` from bytes already in memory (no file
system): the full decode; the reduced decode as shipped (the box kept at
`resize.DRAFT_MARGIN` = 2x the output); and at 1x (the smallest draft that is never
enlarged). Each is the median of --repeats single-image calls, in one thread, interleaved
round by round. Beside the times: how far each reduced output is from the full decode's
(mean and 99th percentile absolute difference, 0..255 levels), so a speed-up is never read
without its cost.
"""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))


def _policy(spec: str):
    from digitkit.images.pixels import PixelPolicy

    size, channels, *rest = spec.split(":")
    h, w = (int(v) for v in size.split("x"))
    kw = {"resize": rest[0]} if rest else {}
    if rest and rest[0] == "center-crop" and len(rest) > 1:
        kw["crop_fraction"] = float(rest[1])
    return PixelPolicy((h, w), int(channels), **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--policies", default="96x96:3,96x96:1,224x224:3:center-crop:0.875")
    args = ap.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)

    import PIL

    from digitkit.images import resize
    from digitkit.images.pixels import pixels_from_bytes

    with tempfile.TemporaryDirectory() as tmp:
        if args.image is None:
            from make_image_set import make_large_jpeg

            args.image = make_large_jpeg(Path(tmp) / "collage.jpg")
        data = args.image.read_bytes()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        print(f"image: {args.image.name}, {im.width}x{im.height} {im.mode} JPEG, "
              f"{len(data):,} bytes; Pillow {PIL.__version__}, one thread, "
              f"median of {args.repeats}")

    def run(policy, margin):
        if margin is None:
            return pixels_from_bytes(data, policy, reduce_jpeg=False)
        saved, resize.DRAFT_MARGIN = resize.DRAFT_MARGIN, margin
        try:
            return pixels_from_bytes(data, policy)
        finally:
            resize.DRAFT_MARGIN = saved

    shipped = resize.DRAFT_MARGIN
    ways = {"full decode": None, f"reduced, {shipped}x margin (shipped)": shipped,
            "reduced, 1x margin": 1}
    print("\n| policy | path | ms / image | speed-up | mean abs diff | p99 abs diff |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for spec in args.policies.split(","):
        policy = _policy(spec)
        outs = {name: run(policy, m) for name, m in ways.items()}  # also warms up
        times = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, m in ways.items():
                t = time.perf_counter()
                run(policy, m)
                times[name].append(time.perf_counter() - t)
        full_ms = statistics.median(times["full decode"]) * 1e3
        label = (f"{policy.size[0]}x{policy.size[1]}x{policy.channels} {policy.resize}"
                 + (f" {policy.crop_fraction}" if policy.resize == "center-crop" else "")
                 + f", {policy.interpolation}")
        for name in ways:
            ms = statistics.median(times[name]) * 1e3
            diff = np.abs(outs[name] - outs["full decode"])
            print(f"| {label} | {name} | {ms:.1f} | {full_ms / ms:.1f}x | "
                  f"{diff.mean():.2f} | {np.percentile(diff, 99):.0f} |")


if __name__ == "__main__":
    main()
