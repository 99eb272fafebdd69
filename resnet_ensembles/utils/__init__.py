"""Small helpers every layer may use: terminal logging and one-line errors for mains (`logs`), and where a
result came from (`provenance`: git commit, training starts). Imports nothing from the rest of the package."""
