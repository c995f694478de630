"""Video data: readers, frame samplers, transforms, datasets, loaders and data-set preparation."""
