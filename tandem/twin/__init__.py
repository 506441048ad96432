"""The local twin: two AWS regions on one machine (moto per region + real PostgreSQL primary/standby).

Layout:
- ``clock``       the compressed clock every time-based behaviour reads (template periods, lags, schedules);
- ``extensions``  what moto 5.2.5 lacks, installed into moto's backends (see each module);
- ``regions``     one moto server per region on its own loopback port (an outage closes the port);
- ``aurora``      the Aurora global database as a PostgreSQL primary and a streaming standby;
- ``daemon``      the twin process: starts, provisions, ticks the extensions, answers the CLI.
"""
