"""`python -m jobs.cli`: the entrypoint of jobs submitted to a Ray cluster (jobs/pipelines/submit.py)."""

import sys

from jobs.cli import main

sys.exit(main())
