"""The bottom floor: small helpers every other package may use. Imports nothing of tailscope's.

``errors`` (one-line error texts), ``optional`` (optional imports that name their extra),
``io`` (atomic writes), ``rng`` (per-layer random generators).
"""
