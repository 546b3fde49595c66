"""Faithful aiohttp emulators of the remote video providers, for tests and `broker serve --sandbox`.

`emulator.py` holds what they share (recording, faults, downloads, webhooks, the admin API);
`runway.py`, `fal.py`, `muvi.py`, `doitong.py` and `pixelapi.py` each speak one provider's protocol;
`sandbox.py` starts them all on loopback ports. Nothing in the broker's runtime path imports this.
"""
