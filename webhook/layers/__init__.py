"""Looking inside image layers, without a Docker daemon (issue 14).

* `webhook.layers.index`: `index_layer` streams one layer blob into a `LayerIndex` (entries,
  whiteouts, captured `/etc/passwd` and `/etc/group`); `LayerIndexStore` caches indexes by
  layer digest; `fetch_layer_index` reads a layer from a registry through the store.
* `webhook.layers.analysis`: pure functions over the indexes of an image's layers (bottom
  first): Dive's efficiency and wasted bytes, per-layer changes, cache files, setuid and
  permission findings, named users resolved through the image's own files.
* `webhook.layers.junk`: the catalogue of package-manager caches and scratch directories.

This module imports nothing, so `webhook.layers.junk` stays importable from anywhere (the
rebuild engine) without pulling in the index and its imports.
"""
