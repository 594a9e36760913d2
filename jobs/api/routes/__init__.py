"""One router per resource; app.py includes them. Routes stay a few lines: typed dependencies in, a schema out."""
