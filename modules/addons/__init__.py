"""Extensions and scripts: finding, installing and loading them, and running a request through their hooks."""
