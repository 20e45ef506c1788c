"""What a bench run shows: the per-batch table, every runtime side by side (in the manner of
Ultralytics' benchmark()), the end-to-end pass, the comparisons, and the plot."""

from __future__ import annotations

from digitkit.predictors import RUNTIMES


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _align(rows: list[list[str]], left: int = 2) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"


def summary_table(record: dict) -> str:
    """One row per model and runtime, in the manner of Ultralytics' benchmark(): status,
    precision, size, load time, accuracy and agreement, then throughput per batch size.
    Runtimes that could not run here are listed with the reason, never as failures."""
    sizes = record["settings"]["batch_sizes"]
    rows = [["model", "engine", "precision", "status", "size MB", "load s", "accuracy",
             "top-1 agree", *(f"b={b}" for b in sizes)]]
    for m in record["models"]:
        for e, r in m["results"].items():
            c = r["check"]
            agree = ("reference" if e == m["reference"] else "-" if c["top1_agreement"] is None
                     else f"{100 * c['top1_agreement']:.2f}%")
            acc = f"{100 * c['accuracy']:.2f}%" if c.get("accuracy") is not None else "-"
            rows.append([m["model"], e, RUNTIMES[e].precision, "ok" if c["ok"] else "FLAGGED",
                         _mb(r.get("size_bytes")), f"{r['load_s']:.2f}", acc, agree,
                         *(_fmt_rate(pb["images_per_s"]) for pb in r["per_batch"])])
        for e, why in record.get("unavailable", {}).items():
            if m["copies"].get(RUNTIMES[e].copy):
                rows.append([m["model"], e, RUNTIMES[e].precision, why, "-", "-", "-", "-",
                             *("-" for _ in sizes)])
    return _align(rows, left=4)


def format_record(record: dict) -> str:
    """The bench record as text: the per-batch table, every runtime side by side, the
    end-to-end pass and the comparisons."""
    head = ["model", "engine", "batch", "images/s", "min ms", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "1st call ms", "load s", "1st inf ms", "peak MB", "top-1 agree"]
    rows = [head]
    for m in record["models"]:
        for e, r in m["results"].items():
            c = r["check"]
            agree = "-" if c["top1_agreement"] is None else f"{100 * c['top1_agreement']:.2f}%"
            if e == m["reference"]:
                agree = "reference"
            elif not c["ok"]:
                agree += " FLAGGED"
            for pb in r["per_batch"]:
                lat = pb["latency_ms"]
                rows.append([m["model"], e, str(pb["batch"]), _fmt_rate(pb["images_per_s"]),
                             _fmt_ms(lat["min"]), _fmt_ms(lat["p50"]), _fmt_ms(lat["p90"]),
                             _fmt_ms(lat["p99"]), _fmt_ms(lat["max"]),
                             _fmt_ms(pb["first_call_ms"]), f"{r['load_s']:.2f}",
                             _fmt_ms(r["first_inference_ms"]), f"{pb['peak_rss_mb']:.0f}",
                             agree])
    parts = [_align(rows), "\nEvery runtime side by side (accuracy on the check images, "
             "agreement with the reference; images/s per batch size):", summary_table(record)]

    e2e_rows = [["model", "engine", "batch", "files", "images/s e2e", "preprocess ms/img",
                 "inference ms/img", "preprocess share", "top-1 agree"]]
    for m in record["models"]:
        for e, r in m["results"].items():
            for x in r.get("end_to_end") or []:
                agree = x.get("top1_agreement")
                e2e_rows.append([m["model"], e, str(x["batch"]), str(x["images"]),
                                 _fmt_rate(x["images_per_s"]),
                                 f"{x['preprocess_ms_per_image']:.4f}",
                                 f"{x['inference_ms_per_image']:.4f}",
                                 f"{100 * x['preprocess_s'] / x['total_s']:.0f}%",
                                 "-" if agree is None else f"{100 * agree:.2f}%"])
    if len(e2e_rows) > 1:
        n = record["settings"]["images"]
        parts.append(f"\nEnd to end over up to {n} image files (decode + preprocess, then "
                     "infer; a pass stops after --duration):")
        parts.append(_align(e2e_rows))

    cmp_rows = [["model", "engine", "batch", "best TF path", "throughput x", "p50 latency x",
                 "best fp32 peer", "throughput x"]]
    for m in record["models"]:
        for c in m["comparison"]:
            cmp_rows.append([m["model"], c["engine"] + (" (FLAGGED)" if c["flagged"] else ""),
                             str(c["batch"]), c["best_tf_engine"] or "-",
                             _ratio(c["throughput_ratio"]), _ratio(c["p50_latency_ratio"]),
                             c.get("best_fp32_peer") or "-",
                             _ratio(c.get("peer_throughput_ratio"))])
    if len(cmp_rows) > 1:
        parts.append("\nONNX Runtime against the best TensorFlow path and the best fp32 peer "
                     "(higher is better for ORT):")
        parts.append(_align(cmp_rows, left=2))
    flagged = [f"{m['model']}/{e}" for m in record["models"] for e, r in m["results"].items()
               if not r["check"]["ok"]]
    if flagged:
        parts.append("\nFLAGGED (top-1 agreement below threshold; never counted as fastest): "
                     + ", ".join(flagged))
    return "\n".join(parts)


def save_plot(record: dict, path) -> None:
    """Throughput against batch size, one line per runtime, one panel per model (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from digitkit.artifacts import atomic_path

    models = record["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.8), squeeze=False)
    styles = {"onnxruntime": ("C0", "o"), "onnxruntime-int8": ("C1", "s"),
              "tf-savedmodel": ("C2", "^"), "tf-function": ("C3", "v"),
              "keras-predict": ("C4", "D"), "openvino": ("C5", "P"),
              "openvino-bf16": ("C6", "X"), "litert": ("C7", "*")}
    for ax, m in zip(axes[0], models, strict=True):
        for e, r in m["results"].items():
            color, marker = styles.get(e, (None, "x"))
            xs = [pb["batch"] for pb in r["per_batch"]]
            ys = [pb["images_per_s"] for pb in r["per_batch"]]
            flagged = not r["check"]["ok"]
            ax.plot(xs, ys, marker=marker, color=color, linestyle="--" if flagged else "-",
                    label=e + (" (FLAGGED)" if flagged else ""))
        ax.set_xscale("log", base=2)
        sizes = record["settings"]["batch_sizes"]
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (images/s)")
        ax.set_title(m["model"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    env = record["environment"]
    fig.suptitle(f"digitkit bench: {env['cpu']}, {record['settings']['threads']} threads",
                 fontsize="medium")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


