"""The lab report and the grader, built on the captures package's facts (see captures/__init__.py):
`python3 -m report.report` (make report), `python3 -m report.grade` (make grade), `report.scenarios`
(the TLS failure scenarios' pages) and `report.labs` (the lab questions)."""
