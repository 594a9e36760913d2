"""The search API: FastAPI under /v1 (app.py), one router per resource (routes/), typed dependencies (deps.py),
and the same app as a Ray Serve deployment with dynamic batching (serve.py, batching.py).

Importing it loads FastAPI, not torch: a service of an ONNX model never imports torch.
"""
