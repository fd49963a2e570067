"""The suite itself: the `dunwell` command and the process launcher, the only code that knows
every service."""
