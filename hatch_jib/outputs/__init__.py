"""Where a built image goes: a registry, a docker-archive tar, an OCI layout, a daemon."""
