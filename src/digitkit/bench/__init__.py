"""`digitkit bench`: every runtime a model can be deployed to, measured with care.

Method (after ONNX Runtime's perf_test and OpenVINO's benchmark_app):
- every runtime runs in its own fresh process (`digitkit.bench.runner`), so load time is a
  cold load, peak RSS is that runtime's alone, and thread pools do not interfere;
- every runtime gets the same thread count (`--threads`, default: the CPUs this process may
  run on) and the same real inputs (MNIST test images for digit models; for any other
  classifier, its --calibration folder decoded by its pixel policy, else seeded random pixels
  of its contract's input shape; float32, made contiguous before timing);
- per batch size: one first call (reported), `--warmup` untimed calls, then timed calls for
  `--duration` seconds (at least a few calls) or exactly `--iterations` calls;
  throughput = images / wall seconds of the timed loop; latency percentiles per call;
- TensorFlow gets a fair baseline: the SavedModel signature, a compiled `tf.function` over
  the Keras model, and Keras `predict`; ONNX Runtime is compared with the best of them, and
  with the best fp32 peer (OpenVINO, LiteRT with XNNPACK: the `runtimes` extra; without it
  their rows say "not installed"). Every row states its precision: reduced-precision rows
  (int8, OpenVINO's bf16) are labelled, never compared as if they were fp32;
- after timing, every runtime classifies the same check images; its top-1 agreement with the
  reference runtime is reported, and a runtime below its threshold is flagged and never
  counted as the fastest.
Nothing here imports TensorFlow: the parent process only orchestrates.

Modules: `config` (BenchConfig, defaults, option parsing), `plan` (models, runtimes, inputs),
`runner` (the measuring subprocess), `report` (cross-check, comparisons, record), `tables`
(the tables and the plot).
"""

from __future__ import annotations

from digitkit.bench.config import BenchConfig, on_device
from digitkit.model.conventions import NO_FLAGS

#: What the CLI uses from `report` and `tables`, loaded on first use (see __getattr__).
_REPORT_NAMES = {"any_flagged": "report", "command_line": "report", "format_record": "tables",
                 "save_plot": "tables"}


def run_bench(config: BenchConfig, *, progress=lambda msg: None, warn=lambda msg: None,
              command: str | None = None, conventions=None) -> dict:
    """Run the whole benchmark; return the JSON-ready record.

    progress(msg) hears which runtime starts; warn(msg) hears about skipped runtimes and what
    input convention a model made elsewhere was found to have; `command` is the command line
    to record; `conventions` (digitkit.model.conventions.ConventionFlags) declares a loose
    model file's convention (None: detected where it is not digitkit's contract).
    """
    import tempfile
    from pathlib import Path

    from digitkit.bench import plan, report, runner

    runtimes, required = config.requested_runtimes
    runtimes, unavailable = plan.available_runtimes(runtimes)
    runtimes, off_device = on_device(runtimes, config.device)
    unavailable.update(off_device)
    models = plan.resolve_models(config.models)
    # Models made elsewhere run through their adapters, resolved once here (never silently on
    # a convention they were not trained for).
    from digitkit.predictors.runnable import runnable_copies

    runnable_copies(models, config.models, conventions or NO_FLAGS, config.data, warn,
                    config.trust_model, config.calibration)
    runtime_plan = plan.plan_runtimes(models, runtimes, required, warn)
    image_paths = plan.find_images(config.images) if config.images else None
    # The input shape, pipeline and classes come from the models' contract.
    contract = plan.models_contract(models)
    x_test, y_test, inputs = plan.contract_inputs(contract, config.calibration, config.data)
    x_check = x_test[:config.check_images]
    labels = y_test[:len(x_check)] if y_test is not None else None

    record = report.new_record(config, command, inputs,
                               int(len(x_check)), len(image_paths) if image_paths else None)
    record["unavailable"] = unavailable
    if not contract.is_digit:
        record["model_contract"] = contract.to_dict()
    with tempfile.TemporaryDirectory(prefix="digitkit-bench-") as tmp:
        work = Path(tmp)
        spec = runner.prepare(work, config, x_test, x_check, image_paths, contract)
        for m in models:
            files = {e: plan.copy_for(m, e) for e in runtime_plan[m.name]}
            results = runner.measure_model(m.name, files, spec, work, config.repeat, progress)
            for e, path in files.items():
                results[e]["size_bytes"] = plan.copy_size(path)
            record["models"].append(report.model_entry(m, results, labels, config.sizes))
    return record


def __getattr__(name: str):
    # The CLI imports digitkit.bench.config for its --help defaults, which runs this file
    # first: the reporting side (numpy, the runtime table) loads only when a run needs it.
    if name in _REPORT_NAMES:
        import importlib

        return getattr(importlib.import_module(f"digitkit.bench.{_REPORT_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BenchConfig", "run_bench", *_REPORT_NAMES]
