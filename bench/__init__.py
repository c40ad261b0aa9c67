"""`make bench`: drive the real system over HTTP, measure it against the raw floor of the same
work, and write a Markdown + JSON report and a chart under bench/results/."""
