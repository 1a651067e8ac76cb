"""Tests of the deployment kit: db/ and workers/."""
