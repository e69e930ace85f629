"""The image model: references, digests, descriptors, manifests, configs and layers."""
