"""Devices and processes: one `data` mesh over all devices of all processes and the batch sharding helpers
(`mesh`), `jax.distributed` start-up for multi-host runs (`distributed`). Imports only `utils`."""
