"""The deterministic consensus simulator: seeded network, Byzantine replicas, safety monitor.

Build a :class:`~bench.sim.scenarios.Scenario` (by hand, :func:`~bench.sim.scenarios.build` or
:func:`~bench.sim.scenarios.from_counts`), run it with :func:`~bench.sim.network.simulate`, and
read :class:`~bench.sim.network.SimResult` (``safe``, ``live``, ``report()``, ``summary()``).
"""
