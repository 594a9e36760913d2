"""What every arcmatch package may import: the error family, the suffixes of photos. It imports nothing of the
project's own."""
