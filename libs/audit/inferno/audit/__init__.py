"""The log as an auditor reads it: history entries, the story of a pipeline, and the invariants
`inferno verify` checks. Pure: entries in, text and reports out."""
