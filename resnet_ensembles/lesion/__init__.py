"""Lesion studies (Veit et al. Figs. 3-5): seeded mask / order generators (`masks`), the vmapped sweep over
mask stacks with stored or recalibrated BatchNorm (`sweep`; the recalibration in `batchnorm`), the
prefix-shared single-deletion wavefront (`wavefront`), what both share (`common`), one sweep of one trained
network as JSON rows (`study`) and their summaries (`summary`). Imports models, data, parallel, store, utils."""
