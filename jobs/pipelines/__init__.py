"""The jobs that move data: gallery ingestion (Ray Data into Milvus), submission to a Ray cluster, the demo."""
