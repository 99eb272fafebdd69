"""Path analysis (Veit et al. Sec. 5.2, Fig. 6): the per-block VJP tape, routed one-path gradients and the
exact per-length decomposition G_k (`gradients`); path-length statistics, sampling over batches and
devices, effective paths (`analysis`); per-image path profiles ||G_k||, their effective windows and peaks,
and their link to single-deletion lesions (`per_example`). Imports models, data, parallel, store."""
