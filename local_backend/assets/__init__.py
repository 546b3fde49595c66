"""Images the project makes itself; `make_sample.py` paints `sample.png`, which `broker demo` submits."""

from pathlib import Path

SAMPLE_IMAGE = Path(__file__).with_name("sample.png")
