"""The commands, each written once against the engine seam (engines/): what a DBA runs."""
