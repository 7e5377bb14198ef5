"""One results table for every row of the survey map: ``docs/results/summary.md`` and ``.json``.

Run ``python -m experiments.summary``. It reads the experiments' JSON files under
``docs/results/`` (it runs nothing) and writes one row per measured result for every row of the
survey map (``experiments/survey_rows.toml``); survey rows without a result are listed as missing,
not left out. ``--check`` compares instead of writing (exit status 1 when the committed table is
stale).

Convention for an experiment's JSON (new experiments follow it; the existing formats are read by
the adapters below): a top-level key ``"summary"`` holding a list of row dicts, one per measured
result, with these keys (``null`` wherever a quantity was not measured or does not change)::

    ref              the survey reference as written in the survey map: "[28]", "table 1", "7.2 (2)"
    method           what was run, short: "HashedNets 1/8", "prune 90% + k-means 5 bits"
    model            the model's registry name or a short description: "lenet300"
    data             the dataset name: "mnist5k", "digits"
    acc_before       test accuracy (a fraction in [0, 1]) of the uncompressed baseline
    acc_after        test accuracy of the compressed model (the mean over seeds)
    acc_after_std    its standard deviation over seeds (null for one seed)
    seeds            the number of seeds acc_after averages
    params_before    parameter count of the baseline
    params_after     parameters actually stored (nonzeros for pruning, factor sizes, buckets)
    bits             bits per stored weight (8, 5, 1, log2 of the codebook), null for float32
    bytes            bytes of the compressed model as stored (the coded .jcz, or the counted size)
    flops_before     multiply-adds of one example through the baseline (jc.analysis.flops)
    flops_after      the same through the compressed model, where it changes
    latency_ms_b1    measured CPU latency of the compressed model at batch 1, in ms
    latency_ms_b128  the same at batch 128, in ms
    command          the command that produced the number ("python -m experiments.x.y --flag")

Optional keys: ``acc_before_std``, ``latency_ms_b1_before`` and ``latency_ms_b128_before``
(the baseline's latency measured in the same run), ``note`` (one short sentence, e.g. the
paper's claim or what the number is not). The machine and the installed versions come from the
file's ``meta`` (``experiments.common.machine()``), shown once per source file.
"""
