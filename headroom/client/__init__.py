"""The lease client: ask the guard for GPU/RAM before using them (`headroom check`, `headroom run`, lease(), pytest).

`http` speaks the guard's lease API, `lease` acquires, heartbeats and releases, `commands` and `runner` are the
two commands, `isolate` gives `run`'s command a memory cgroup of its own, `settings` is the [run] section and
`pytest_plugin` the `@pytest.mark.headroom` marker. In Python: `from headroom.client.lease import lease`.
"""
