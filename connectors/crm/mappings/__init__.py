"""Shipped CRM column mappings (YAML); a package so that the files ship with a wheel."""
