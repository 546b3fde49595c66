"""The bundled local video backend: animate one still image with a virtual camera, encode it to MP4.

Import-light on purpose: `local_backend.image` (Pillow only) is what the API uses to check an upload;
the torch modules (`render`, `generator`, `scheduler`) load only when something renders.
"""
