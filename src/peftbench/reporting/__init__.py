"""What a results folder shows: results.csv and trials.csv (tables.py), report.md (markdown.py), report.html
(html.py), all written by reports.py, and the experiment trackers each finished run is logged to."""
