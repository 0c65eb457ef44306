"""The application layer: what the main job and the benchmarks share.

- `keras_sce.app.harness`: how every experiment is run and recorded: one configuration
  per fresh child process (failures become rows with their cause), attributable peak
  memory (CPU and GPU), the compiled memory of an XLA program, the CSV schema helper and
  the Markdown / PNG writers (`keras_sce.app.records`).
- `keras_sce.app.runner`: run a function in a fresh child process and turn any way it
  can die (exception, signal, out-of-memory kill) into a result with a cause.
- `keras_sce.app.main_job`: the `keras-sce train` job (`keras_sce.cli` parses its
  options).
- `keras_sce.app.memory`: read the memory this machine has and this process uses, and
  predict the memory a loss needs before training with it.
- `keras_sce.app.options`: argparse types and checks with messages that name the option.
- `keras_sce.app.report`: the results table, CSV, JSON (strict) and plot.

Nothing in the library imports this package.
"""
