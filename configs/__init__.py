"""Run configs (each a short delta over `configs.common`) and their shared helpers."""
