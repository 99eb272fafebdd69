"""The staged reproduction advanced piece by piece, its state carried between machines as plain files
(experiments/paper_chain.py): `runner` orders and runs the steps, `steps` holds their bodies, `piece` runs one
piece under a time budget, `files` and `tar` seed, collect and absorb the state, `git` keeps finished networks
in git history. Importing this package imports none of them: `files`, `tar` and `git` need the standard
library only."""
