"""sendguard's built-in policies (installed as `sendguard_plugins`).

Each is registered under the `sendguard.policies` entry point group in pyproject.toml, exactly
as a third-party policy would be; the core never imports them by name.
"""
