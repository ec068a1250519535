"""Hooks: names and enum numbers (L{names}), the registry, payload builders."""
