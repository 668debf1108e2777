"""The benchmark behind ``python -m kdloss bench``, and the pieces ``benches/suite.py`` builds on.

Each module has one job and imports only modules listed before it here (so no import cycles):

- :mod:`~kdloss.bench.console`: the status line on stderr, the error that ends a run, ``plural``;
- :mod:`~kdloss.bench.timing`: a sample (first call, then warm calls), warm-up, interleaved
  rounds, the wait for the process's other threads to go idle;
- :mod:`~kdloss.bench.machine`: platform and CPU description, background load, and the
  bandwidth and exp-cost probes behind the lower bound (:class:`~kdloss.bench.machine.Limits`);
- :mod:`~kdloss.bench.workloads`: the loss settings and shapes, the seeded inputs, the
  implementations compared, the check against the reference, the timing of one shape;
- :mod:`~kdloss.bench.report`: number formats, text and Markdown tables, the bound of a loss
  call, the JSON record;
- :mod:`~kdloss.bench.plot`: the optional ``--plot`` chart (matplotlib, imported when asked for);
- :mod:`~kdloss.bench.cli`: the options and the run of ``python -m kdloss bench``.

Importing the package imports none of its modules; none needs more than NumPy at import.
"""
