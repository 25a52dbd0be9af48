"""A task's inputs and state: what a request asks, the saved tracks, the projects' connections and
the ledger of writes to Label Studio."""
