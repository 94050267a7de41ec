"""Measuring a Codec: per-stage profiles (:mod:`.profile`, ``fastlic profile``) and
latency percentiles over a folder (:mod:`.bench`, ``fastlic bench``). The stage timer
itself is :mod:`fastlic.timing`."""
