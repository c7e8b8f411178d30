"""Reading images from OCI registries and the local Docker engine, without pulling them."""
