"""Domain logic of audience-hub: plain Python, no Dagster, no I/O beyond what is passed in."""
