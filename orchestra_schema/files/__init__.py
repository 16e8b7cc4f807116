"""Files on disk, for every layer: paths checked before opening, staged writes renamed into
place, digests."""
