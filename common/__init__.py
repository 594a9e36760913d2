"""What every arcmatch package may import: the error family. It imports nothing of the project's own."""
