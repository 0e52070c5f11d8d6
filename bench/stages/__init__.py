"""Stage functions: each runs in a measurement child, times its own measured region and
returns {"seconds", "records", ...} (or {"figures": {key: {...}}} for several figures)."""
